"""Training overhead: the seed's tiny training with no uploads vs three ways of uploading.

    python -m bench.training_overhead [--repeats 3] [--bandwidth-mb 16] [--pad-mb auto]
                                      [--max-steps -1] [--save-steps 50] [--trainer-threads 1]
                                      [--variants abcde] [--hub-dir /dev/shm]

The seed's numbers (450 steps, a checkpoint every 50: 9 checkpoints + the final adapter), each
checkpoint padded so that uploading it through devhub's throttle takes about one save interval,
four ways: (a) no uploads; (b) the seed's callback (`upload_folder` inside `on_save`);
(c) Trainer's own `push_to_hub` with `hub_strategy="all_checkpoints"`; (d) the sidecar
(`uploader watch --exit-when-done`, started first as a native sidecar is).

And under load, the second core busy with another CPU-bound process: (a') no uploads and (e)
the sidecar, each with a busy loop (`python -c 'while True: pass'`, not pinned: the scheduler
places it as it would a neighbour's job) started just before the trainer and killed once the
trainer exits (before the sidecar's drain). (e) is reported against (a'), the same load without
uploads; (a') against (a). `--variants` takes the letters a-e; `e` brings (a') along as its
baseline, and (a) always runs.

Per run: training wall time (the `Trainer.train()` call) / (a) of the same repeat, what is on
the Hub at the end, and the time from the end of `train()` until the last upload landed (the
final adapter is written after `train()` in every variant), plus the CPU the sidecar and devhub
used. Each run is its own trainer process (`bench.trainer_child`) against its own devhub, which
keeps its data on tmpfs at the lowest priority: it stands in for the remote Hub, whose disks and
CPU are not the training node's.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    USER,
    LoggedProcess,
    MiB,
    ProcessSampler,
    Table,
    add_common_args,
    client_env,
    cpu_seconds,
    devhub,
    fmt,
    median,
    ratios,
    rotations,
    scratch,
    status_rows,
    uploader_env,
)
from bench.trainer_child import END_OF_TRAINING, NONE, PUSH, PUSH_REPO, SIDECAR
from bench.trainer_child import VARIANTS as CHILD_VARIANTS

# Under load: the trainer child runs the base variant while a busy loop takes the second core.
LOADED_NONE, LOADED_SIDECAR = "a' no uploads, second core busy", "e sidecar, second core busy"
BASE_OF = {LOADED_NONE: NONE, LOADED_SIDECAR: SIDECAR}
BASELINE_OF = {LOADED_SIDECAR: LOADED_NONE}  # the rest: (a)
VARIANTS = (*CHILD_VARIANTS, LOADED_NONE, LOADED_SIDECAR)
LOAD_COMMAND = (sys.executable, "-c", "while True: pass")
TARGET_RATIO = 1.03  # issue 15: <= 1.03x of no uploads, everything on the Hub
TRAIN_TIMEOUT_S = 3600.0
DRAIN_TIMEOUT_S = 900.0
START_TIMEOUT_S = 120.0
DEFAULT_HUB_DIR = Path("/dev/shm")
HUB_NICENESS = 19


@dataclass(frozen=True)
class Config:
    repeats: int
    bandwidth: int  # bytes per second of devhub's throttle on LFS uploads
    pad_bytes: int | None  # None: calibrated so one upload takes one save interval
    max_steps: int
    save_steps: int
    threads: int
    variants: tuple[str, ...]
    work_dir: Path | None
    hub_dir: Path | None


@dataclass(frozen=True)
class Sample:
    variant: str
    train_s: float
    expected: int  # checkpoints + the final adapter
    on_hub: int
    drain_s: float | None  # None: something never reached the Hub
    sidecar_cpu_s: float | None  # the uploader process, from `watching` to its exit
    hub_cpu_s: float  # devhub, from the trainer's start to the last upload
    load_cpu_s: float | None = None  # the busy loop of (a') and (e)


# -- the benchmark -------------------------------------------------------------------------

def throttle(bandwidth: int) -> list[dict[str, Any]]:
    """Throttle what carries the bytes, in both transfers (every client here takes Xet by
    default, as on the Hub): each LFS object PUT and each Xet xorb POST. API calls stay fast."""
    return [{"action": "throttle", "method": "PUT", "path": "^/_lfs/",
             "bytes_per_second": bandwidth},
            {"action": "throttle", "method": "POST", "path": "/v1/xorbs/",
             "bytes_per_second": bandwidth}]


def hub_inventory(api: Any, variant: str) -> int:
    """Checkpoints + final adapter that reached the Hub with their files."""
    if variant == PUSH:
        repo = f"{USER}/{PUSH_REPO}"
        files = api.list_repo_files(repo)
        folders = {f.split("/")[0] for f in files if f.startswith("checkpoint-")}
        final = any(c.title == END_OF_TRAINING for c in api.list_repo_commits(repo))
        return len(folders) + int(final)
    count = 0
    for model in api.list_models(author=USER):
        if any(f != ".gitattributes" for f in api.list_repo_files(model.id)):
            count += 1
    return count


def variant_letter(variant: str) -> str:
    """"a", "b", ..., "a'", "e": what the table's variant names start with."""
    return variant.split()[0]


def run_once(variant: str, config: Config, pad_bytes: int) -> Sample:
    from huggingface_hub import HfApi

    base = BASE_OF.get(variant, variant)
    with scratch(config.work_dir, "bench-train-") as root, \
            scratch(config.hub_dir, "bench-train-hub-") as hub_data, \
            devhub(hub_data, throttle(config.bandwidth)) as hub, ExitStack() as stack:
        out = root / "out"
        env = client_env(hub.url, root / "hf-home")
        uploader, sidecar = None, None
        if base == SIDECAR:
            uploader = _start_sidecar(hub.url, root, out)
            stack.callback(uploader.stop)
            sidecar = stack.enter_context(ProcessSampler(uploader.pid))
        hub_process = psutil.Process(hub.pid)
        # The real Hub's CPU is not the training node's: lowest priority keeps devhub's work
        # (receiving, hashing, storing) from taking the trainer's core when the machine is busy.
        hub_process.nice(HUB_NICENESS)
        cpu_before = (cpu_seconds(hub_process), sidecar.cpu if sidecar else 0.0)
        load = None
        if variant in BASE_OF:
            load = LoggedProcess(LOAD_COMMAND, env, root / "load.log")
            stack.callback(load.stop)
        timings = _train(base, config, pad_bytes, root, out, env)
        load_cpu = None
        if load is not None:
            load_cpu = cpu_seconds(psutil.Process(load.pid))
            load.stop()
        expected = int(timings["global_step"]) // config.save_steps + 1
        last_upload = _drain(uploader, out, hub.url, root) if uploader else timings["job_end"]
        hub_cpu = cpu_seconds(hub_process) - cpu_before[0]
        sidecar_cpu = sidecar.cpu - cpu_before[1] if sidecar else None
        on_hub = hub_inventory(HfApi(endpoint=hub.url, token=env["HF_TOKEN"]), base)
    complete = on_hub >= expected and last_upload is not None
    drain = last_upload - timings["train_end"] if complete and last_upload else None
    return Sample(variant, timings["train_end"] - timings["train_start"], expected, on_hub,
                  drain, sidecar_cpu, hub_cpu, load_cpu)


def _start_sidecar(endpoint: str, root: Path, out: Path) -> LoggedProcess:
    uploader = LoggedProcess.uploader(["watch", "--output-dir", str(out), "--exit-when-done"],
                                      uploader_env(endpoint, root / "hf-home"),
                                      root / "uploader.log")
    uploader.wait_for(lambda text: "watching" in text, START_TIMEOUT_S, "uploader start")
    return uploader


def _train(variant: str, config: Config, pad_bytes: int, root: Path, out: Path,
           env: dict[str, str]) -> dict[str, float]:
    result = root / "result.json"
    child = LoggedProcess(
        [sys.executable, "-m", "bench.trainer_child", "--variant", variant,
         "--output-dir", str(out), "--result", str(result), "--pad-bytes", str(pad_bytes),
         "--max-steps", str(config.max_steps), "--save-steps", str(config.save_steps),
         "--threads", str(config.threads)], env, root / "trainer.log")
    code = child.wait(TRAIN_TIMEOUT_S)
    if code != 0:
        raise RuntimeError(f"{variant}: trainer exited {code}:\n{child.output()[-3000:]}")
    return json.loads(result.read_text())


def _drain(uploader: LoggedProcess, out: Path, endpoint: str, root: Path) -> float | None:
    """When the sidecar's last verification happened (None if it never finished)."""
    try:
        uploader.wait(DRAIN_TIMEOUT_S)
    except TimeoutError:
        return None
    rows = status_rows(out, uploader_env(endpoint, root / "hf-home"))
    verified = [r["verified_at"] for r in rows if r["state"] == "verified"]
    return max(verified) if verified and len(verified) == len(rows) else None


def calibrate(config: Config) -> tuple[int, str]:
    """Padding so that one upload at the throttled bandwidth takes one save interval, from a
    warm-up run of (a) (which also warms the caches; it is not counted)."""
    if config.pad_bytes is not None:
        return config.pad_bytes, f"padding {config.pad_bytes / MiB:.0f} MiB per checkpoint (given)"
    warm = run_once(NONE, config, 0)
    saves = max(1, warm.expected - 1)
    interval = warm.train_s / saves
    pad = int(interval * config.bandwidth)
    return pad, (f"padding {pad / MiB:.0f} MiB per checkpoint: one save interval "
                 f"({interval:.1f} s in a warm-up run of (a)) at {config.bandwidth / MiB:.0f} MiB/s")


def measure(config: Config) -> tuple[list[Sample], str]:
    pad, pad_note = calibrate(config)
    samples = []
    for repeat, variant in rotations(config.variants, config.repeats):
        sample = run_once(variant, config, pad)
        print(f"repeat {repeat + 1}/{config.repeats} {variant}: train {sample.train_s:.1f} s, "
              f"{sample.on_hub}/{sample.expected} on the Hub, drain {fmt(sample.drain_s, 1)} s, "
              f"CPU sidecar {fmt(sample.sidecar_cpu_s, 1)} s devhub {sample.hub_cpu_s:.1f} s"
              + (f" load {sample.load_cpu_s:.1f} s" if sample.load_cpu_s is not None else ""),
              flush=True)
        samples.append(sample)
    return samples, pad_note


def table(samples: list[Sample], config: Config, pad_note: str) -> Table:
    result = Table("Training overhead", ["variant", "train s", "x (a)", "on Hub", "drain s",
                                         "sidecar CPU s", "devhub CPU s", "target", "met"])
    result.notes += [
        f"{config.repeats} interleaved repeats, medians; train s = the `Trainer.train()` call; "
        "x (a) = median of per-repeat ratios against (a); drain s = end of train() until the "
        "last upload landed (F1 pass + final adapter included; 'never' = something was "
        "never uploaded); CPU s = user + system of the uploader process (d) and of devhub, "
        "the stand-in for the remote Hub that shares this machine",
        f"{pad_note}; devhub throttles each LFS object PUT and each Xet xorb POST to "
        f"{config.bandwidth / MiB:.0f} MiB/s "
        f"and keeps its data in {config.hub_dir or 'the work dir'}, at nice {HUB_NICENESS}",
        f"tiny Llama on CPU, {config.threads} torch thread(s), "
        f"max_steps {config.max_steps} (-1 = the seed's 3 epochs), save every "
        f"{config.save_steps}; W&B off",
    ]
    if LOADED_NONE in config.variants:
        result.notes.append(
            "second core busy: a `while True: pass` process (not pinned) from the trainer's "
            "start to its exit; x (a) is against (a) for (a'), against (a') for (e)")
    for variant in config.variants:
        runs = [s for s in samples if s.variant == variant]
        base = [s.train_s for s in samples if s.variant == BASELINE_OF.get(variant, NONE)]
        ratio = median(ratios([s.train_s for s in runs], base))
        hub = f"{median([s.on_hub for s in runs]):g}/{runs[0].expected}"
        sidecar = [s.sidecar_cpu_s for s in runs if s.sidecar_cpu_s is not None]
        result.add(variant, fmt(median([s.train_s for s in runs]), 1), fmt(ratio, 3),
                   hub, _drain_cell(runs), fmt(median(sidecar), 1),
                   fmt(median([s.hub_cpu_s for s in runs]), 1), *_target(variant, ratio, runs))
    return result


def _drain_cell(runs: list[Sample]) -> str:
    if BASE_OF.get(runs[0].variant, runs[0].variant) == NONE:
        return "-"
    done = [s.drain_s for s in runs if s.drain_s is not None]
    if not done:
        return "never"
    cell = fmt(median(done), 1)
    return cell if len(done) == len(runs) else f"{cell} ({len(done)}/{len(runs)} runs)"


def _target(variant: str, ratio: float, runs: list[Sample]) -> tuple[str, str]:
    if BASE_OF.get(variant, variant) != SIDECAR:
        return "-", "-"
    met = ratio <= TARGET_RATIO and all(s.on_hub >= s.expected for s in runs)
    against = variant_letter(BASELINE_OF.get(variant, NONE))
    return f"<= {TARGET_RATIO}x ({against}), all uploaded", "yes" if met else "no"


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, repeats=3)
    parser.add_argument("--bandwidth-mb", type=float, default=16.0,
                        help="devhub's throttle on each LFS PUT and Xet xorb POST, MiB/s")
    parser.add_argument("--pad-mb", type=float, default=None,
                        help="padding per checkpoint, MiB (default: one save interval's upload)")
    parser.add_argument("--max-steps", type=int, default=-1,
                        help="-1: the seed's 3 epochs (450 steps)")
    parser.add_argument("--save-steps", type=int, default=50)
    # One thread by default: on a GPU node the training loop leaves host cores free, while two
    # torch threads on a 2-core VM would measure CPU contention with devhub, which stands in for
    # the remote Hub, rather than the sidecar's overhead. Pass 2 to see that contention.
    parser.add_argument("--trainer-threads", type=int, default=1)
    # The real Hub stores uploads on its own disks: devhub's writes on the trainer's disk would
    # slow every variant's saves in a way no real upload does.
    parser.add_argument("--hub-dir", type=Path, default=DEFAULT_HUB_DIR if
                        DEFAULT_HUB_DIR.is_dir() else None,
                        help="devhub's data (default: tmpfs when there is one)")
    parser.add_argument("--variants", default="abcde",
                        help="letters of the variants to run (a-e); (a) always runs, as the "
                             "baseline, and e brings its loaded baseline (a') along")
    args = parser.parse_args(argv)
    letters = set(args.variants) | {"a"} | ({"a'"} if "e" in args.variants else set())
    if set(args.variants) - set("abcde"):
        parser.error("--variants takes letters from abcde")
    variants = tuple(v for v in VARIANTS if variant_letter(v) in letters)
    if args.tiny:
        args.repeats, args.max_steps, args.save_steps = 1, 6, 3
        args.pad_mb = 1.0 if args.pad_mb is None else args.pad_mb
    return Config(repeats=args.repeats, bandwidth=int(args.bandwidth_mb * MiB),
                  pad_bytes=None if args.pad_mb is None else int(args.pad_mb * MiB),
                  max_steps=args.max_steps, save_steps=args.save_steps,
                  threads=args.trainer_threads, variants=variants, work_dir=args.work_dir,
                  hub_dir=args.hub_dir)


def main(argv: list[str] | None = None) -> int:
    config = parse(sys.argv[1:] if argv is None else argv)
    samples, pad_note = measure(config)
    table(samples, config, pad_note).print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
