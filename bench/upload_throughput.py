"""Upload efficiency and time to first byte: the sidecar vs a bare `HfApi.upload_folder`.

    python -m bench.upload_throughput [--sizes-mb 1024,4096,8192] [--repeats 3] [--transfers xet,lfs]
        [--short-run-factor 3] [--no-wandb-check] [--no-low-memory-check]

For each size, a checkpoint-shaped folder of random bytes (two large binaries and the small
files Trainer and PEFT write). Sidecar: `uploader watch --exit-when-done` is running when the
folder is written; the clock runs from the completion marker landing to the uploader's
`verified_at` (detection, hashing, staging by hard links, upload, verification). Bare: a fresh
process times one `HfApi.upload_folder` of an equal folder. Each side gets fresh random bytes
and its own devhub data dir, since the LFS batch skips objects a server already holds.

devhub runs at nice 19 on both sides (it stands in for the remote Hub, whose CPU is not the
client's) and both clients at nice 0 (the sidecar with `--nice 0 --cpu-scheduler normal
--io-priority normal`: its default of giving way to a trainer is what the training benchmark
measures).

Both sides run in each transfer: xet (devhub serves Xet, as the Hub does; both clients take it by
default) and lfs (HF_HUB_DISABLE_XET=1 for both). Rates are MiB/s, with the single-core sha256
rate measured in the same run beside them; CPU is user + system seconds of the client process
and its threads (hf_xet's included) per GiB uploaded, counted over each side's timed window: from
its clock start (the marker landing; the `upload_folder` call) to its end (the sidecar's
`verified_at`, interpolated between the 50 ms CPU samples either side; the call's return), so
that neither side's imports, login or exit are charged to the bytes. The
uploader's peak RSS is sampled with W&B off; one extra sidecar run with W&B on (offline)
reports W&B's service process separately.

Time to first byte, from the same runs (a second table): devhub's request log (each entry's
`time` is when the request ended, `duration` since devhub read its headers, so a request began
at time - duration), against the sidecar's clock start (the completion marker landing) and the
bare one's (the `upload_folder` call). First byte = the first request that carries file bytes:
a xorb POST to Xet storage (xet), an LFS object PUT (lfs); "first >= 1 MiB" the first such
request with a MiB or more in its body (a large file's bytes, not a scheduler.pt); first upload
call = the first request of the upload protocol at all (preupload, LFS batch, Xet token,
storage). The sidecar's own state gives detected (marker -> `detected_at`) and detected ->
verified for the same checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import (
    TRANSFERS,
    USER,
    GiB,
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
    rotated,
    scratch,
    status_rows,
    uploader_env,
)
from devhub.testing import DevHub
from devhub.xet import STORAGE_PREFIX

SIDECAR, BARE = "sidecar", "bare"
BARE_COMMAND = "bare"
FOLDER = "checkpoint-1000"
STEP = 1000
WRITE_CHUNK = 4 * MiB
# The small files of a LoRA checkpoint, with the sizes Trainer and PEFT write for Llama 3.
SMALL_FILES = (("README.md", 5 * 1024), ("adapter_config.json", 1024),
               ("tokenizer.json", 9 * MiB), ("tokenizer_config.json", 50 * 1024),
               ("special_tokens_map.json", 512), ("chat_template.jinja", 4 * 1024),
               ("training_args.bin", 5 * 1024), ("rng_state.pth", 14 * 1024),
               ("scheduler.pt", 1536), ("trainer_state.json", 8 * 1024))
TEXT_SUFFIXES = (".md", ".json", ".jinja")  # written as text: the Hub parses README.md
# The rest of the size: Adam keeps two moments per trainable weight, so the optimizer state is
# about twice the adapter.
LARGE_SHARES = (("adapter_model.safetensors", 1 / 3), ("optimizer.pt", 2 / 3))
SHA256_SAMPLE = 512 * MiB
SHA256_SAMPLE_TINY = 16 * MiB
TARGET_RATIO = 1.0
TARGET_RSS_MB = 150
# hf_xet's own variables, set by the user (the README's low-memory recipe): one xorb upload and
# one file ingested at a time. hf_xet 1.8.0 cuts 64 MiB xorbs and holds each twice while it
# serializes it; these bound how many are alive at once, not their size.
LOW_MEMORY_XET = {"HF_XET_FIXED_UPLOAD_CONCURRENCY": "1",
                  "HF_XET_DATA_MAX_CONCURRENT_FILE_INGESTION": "1"}
TARGET_FIRST_BYTE_S = 1.0
# A short run's spread between repeats is as large as the gap it measures (a 1 GiB upload takes
# 4-8 s here, and one slow fsync in devhub moves it by a second): a size under this one is
# repeated more, up to SHORT_RUN_FACTOR times, so the medians of short runs settle too.
REPEAT_REFERENCE = 4 * GiB
SHORT_RUN_FACTOR = 3
BIG_REQUEST = MiB  # a request body this large carries a large file's bytes
START_TIMEOUT_S = 120.0
UPLOAD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]  # bytes
    repeats: int
    wandb_check: bool
    sha_sample: int
    work_dir: Path | None
    transfers: tuple[str, ...] = TRANSFERS
    low_memory_check: bool = True
    short_run_factor: int = SHORT_RUN_FACTOR

    def pairs_per_repeat(self, size: int) -> int:
        """Sidecar/bare pairs of `size` in each repeat: 1 at REPEAT_REFERENCE and above, more
        (up to `short_run_factor`) below it."""
        return max(1, min(self.short_run_factor, -(-REPEAT_REFERENCE // size)))

    def runs(self, size: int) -> int:
        return self.repeats * self.pairs_per_repeat(size)


@dataclass(frozen=True)
class FirstBytes:
    """When the upload's first requests began, in seconds after the side's clock started (the
    marker landing, the `upload_folder` call); None: no such request."""

    first_call: float | None  # preupload, LFS batch, Xet token or storage: the protocol starts
    first_byte: float | None  # the first request carrying file bytes (xorb POST, LFS PUT)
    first_big: float | None  # the first of those with >= BIG_REQUEST bytes in its body
    detected: float | None = None  # sidecar: marker -> detected_at
    detected_to_verified: float | None = None  # sidecar: detected_at -> verified_at


@dataclass(frozen=True)
class Sample:
    side: str
    size: int
    seconds: float
    peak_rss: int
    children_rss: int = 0
    transfer: str = "xet"
    cpu_seconds: float = 0.0  # user + system of the client process and its threads
    first: FirstBytes | None = None

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu_seconds / (self.size / GiB)

    @property
    def rate(self) -> float:
        return self.size / MiB / self.seconds


# -- the folder ----------------------------------------------------------------------------

def file_plan(total: int) -> list[tuple[str, int]]:
    small = [(name, size) for name, size in SMALL_FILES]
    rest = max(0, total - sum(size for _, size in small))
    large = [(name, int(rest * share)) for name, share in LARGE_SHARES]
    return small + large


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        if path.suffix in TEXT_SUFFIXES:
            out.write(os.urandom(size // 2).hex().encode()[:size])
            return
        if path.suffix == ".safetensors":
            header = safetensors_header(size)
            out.write(header)
            size -= len(header)
        while size > 0:
            piece = os.urandom(min(WRITE_CHUNK, size))
            out.write(piece)
            size -= len(piece)


def safetensors_header(size: int) -> bytes:
    """Length + JSON header of one U8 tensor that fills the rest of a `size`-byte file."""
    header = b""
    while True:  # the header's length changes the data's length; padding makes it settle
        data = size - 8 - len(header)
        new = json.dumps({"w": {"dtype": "U8", "shape": [data],
                                "data_offsets": [0, data]}}).encode()
        new += b" " * (-len(new) % 8)
        if len(new) == len(header):
            return len(new).to_bytes(8, "little") + new
        header = new


def write_folder(folder: Path, total: int) -> None:
    folder.mkdir(parents=True)
    for name, size in file_plan(total):
        write_random(folder / name, size)
    # On disk before either clock starts: the bare side's process start would otherwise give
    # the kernel's write-back a head start the sidecar (timed from the marker) never gets.
    os.sync()


def sha256_rate(sample: int) -> float:
    """Single-core sha256 over in-memory data, MiB/s."""
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(sample // MiB):
        digest.update(block)
    return sample / MiB / (time.perf_counter() - started)


# -- the request log -----------------------------------------------------------------------

def carries_bytes(entry: dict, transfer: str) -> bool:
    if transfer == "xet":
        return entry["method"] == "POST" and "/v1/xorbs/" in entry["path"]
    return entry["method"] == "PUT" and entry["path"].startswith("/_lfs/")


def is_upload_call(entry: dict) -> bool:
    path = entry["path"]
    return ("/preupload/" in path or "/info/lfs/" in path or "/xet-write-token/" in path
            or path.startswith((STORAGE_PREFIX, "/_lfs/")))


def first_bytes(log: list[dict], since: float, transfer: str) -> FirstBytes:
    """The first upload requests that began at `since` (epoch) or later, from devhub's log."""
    begun = sorted((e["time"] - e["duration"], e) for e in log
                   if e["time"] - e["duration"] >= since)

    def first(wanted: Callable[[dict], bool]) -> float | None:
        return next((start - since for start, e in begun if wanted(e)), None)

    return FirstBytes(
        first(is_upload_call), first(lambda e: carries_bytes(e, transfer)),
        first(lambda e: carries_bytes(e, transfer) and e["bytes_in"] >= BIG_REQUEST))


# -- the two sides -------------------------------------------------------------------------

HUB_NICENESS = 19


def remote(hub: DevHub) -> None:
    """devhub stands in for the remote Hub, whose CPU is not the client's: at the lowest
    priority, on both sides alike, the client's share of this machine is the client's own."""
    psutil.Process(hub.pid).nice(HUB_NICENESS)


def run_sidecar(size: int, config: Config, wandb: bool = False, transfer: str = "xet",
                setting: dict[str, str] | None = None) -> Sample:
    from shared.layout import default_state_dir
    from shared.markers import build_marker, write_marker
    from shared.run_info import Outcome, finish_run, start_run
    from uploader.state import StateStore

    with scratch(config.work_dir, "bench-upload-sidecar-") as root, \
            devhub(root / "hub") as hub:
        remote(hub)
        out = root / "out"
        info = start_run(out, base_model="bench", resume=False)
        extra = {"WANDB_MODE": "offline", "WANDB_DIR": str(root)} if wandb else {}
        extra |= setting or {}
        # Both clients at the same priority: this table compares upload paths; giving way to
        # a trainer (the sidecar's default nice 10) is what the training table measures.
        env = uploader_env(hub.url, root / "hf-home", transfer, UPLOADER_NICE="0",
                           UPLOADER_CPU_SCHEDULER="normal", UPLOADER_IO_PRIORITY="normal",
                           **extra)
        uploader = LoggedProcess.uploader(
            ["watch", "--output-dir", str(out), "--exit-when-done"], env, root / "uploader.log")
        try:
            with ProcessSampler(uploader.pid) as rss:
                uploader.wait_for(lambda text: "watching" in text, START_TIMEOUT_S,
                                  "uploader start")
                write_folder(out / FOLDER, size)
                marker = build_marker(out, FOLDER, run_id=info.run_id, step=STEP)
                # CPU per GiB counts from here, as the bare side's from its upload call: neither
                # side's start-up (imports, login) is charged to the bytes.
                cpu_started = cpu_seconds(psutil.Process(uploader.pid))
                landing = time.time()  # first-byte clock: from just before the rename
                write_marker(out, marker)
                complete = time.time()
                finish_run(out, Outcome.COMPLETED)
                uploader.wait(UPLOAD_TIMEOUT_S)
        finally:
            uploader.stop()
        rows = [r for r in status_rows(out, env) if r["folder"] == FOLDER]
        if not rows or rows[0]["state"] != "verified":
            raise RuntimeError(f"sidecar did not verify {FOLDER}:\n{uploader.output()[-3000:]}")
        with StateStore.open(default_state_dir(out), readonly=True) as store:
            record = next(r for r in store.all() if r.folder == FOLDER)
        first = dataclasses.replace(
            first_bytes(hub.log(), landing, transfer), detected=record.detected_at - landing,
            detected_to_verified=(record.verified_at or float("nan")) - record.detected_at)
        # CPU up to `verified_at`, as the bare side's up to its call's return. After it come
        # the snapshot's removal, one state write and the exit (--exit-when-done, which a
        # watcher in production never does): milliseconds of bookkeeping, then start-up's
        # mirror image, which the bare side's figure leaves out too.
        verified_cpu = rss.cpu_at(rows[0]["verified_at"])
        return Sample(SIDECAR, size, rows[0]["verified_at"] - complete, rss.peak,
                      rss.children_peak, transfer, verified_cpu - cpu_started, first)


def run_bare(size: int, config: Config, transfer: str = "xet") -> Sample:
    with scratch(config.work_dir, "bench-upload-bare-") as root, devhub(root / "hub") as hub:
        remote(hub)
        folder = root / FOLDER
        write_folder(folder, size)
        result = root / "result.json"
        child = LoggedProcess([sys.executable, "-m", "bench.upload_throughput", BARE_COMMAND,
                               "--folder", str(folder), "--result", str(result)],
                              client_env(hub.url, root / "hf-home", transfer),
                              root / "bare.log")
        with ProcessSampler(child.pid) as rss:
            code = child.wait(UPLOAD_TIMEOUT_S)
        if code != 0:
            raise RuntimeError(f"bare upload exited {code}:\n{child.output()[-3000:]}")
        timing = json.loads(result.read_text())
        return Sample(BARE, size, timing["seconds"], rss.peak, transfer=transfer,
                      cpu_seconds=timing["cpu_seconds"],
                      first=first_bytes(hub.log(), timing["started_at"], transfer))


def bare_main(argv: list[str]) -> int:
    """The bare side, in its own process: one `upload_folder`, timed without the imports."""
    parser = argparse.ArgumentParser(prog="bench.upload_throughput bare")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = f"{USER}/bare-upload"
    api.create_repo(repo_id, private=True)  # as the sidecar creates its repos
    started_at = time.time()  # epoch, against devhub's request log
    started, cpu_started = time.monotonic(), time.process_time()
    api.upload_folder(folder_path=str(args.folder), repo_id=repo_id)
    # process_time: user + system of every thread of this process, during the upload only
    args.result.write_text(json.dumps({"seconds": time.monotonic() - started,
                                       "cpu_seconds": time.process_time() - cpu_started,
                                       "started_at": started_at}))
    return 0


# -- the benchmark -------------------------------------------------------------------------

def run_pair(size: int, transfer: str, run: int, config: Config) -> list[Sample]:
    """One sidecar and one bare upload of `size`, the first of the two alternating by run."""
    samples = []
    for side in rotated((SIDECAR, BARE), run):
        sample = (run_sidecar(size, config, transfer=transfer) if side == SIDECAR
                  else run_bare(size, config, transfer))
        first = sample.first.first_byte if sample.first else None
        print(f"run {run + 1}/{config.runs(size)} {transfer} {size / MiB:.0f} MiB {side}: "
              f"{sample.rate:.0f} MiB/s, peak RSS {sample.peak_rss / MiB:.0f} MiB, CPU "
              f"{sample.cpu_per_gib:.1f} s/GiB, first byte {fmt(first)} s", flush=True)
        samples.append(sample)
    return samples


def measure(config: Config) -> tuple[list[Sample], list[float], Sample | None, Sample | None]:
    samples: list[Sample] = []
    sha_rates: list[float] = []
    for repeat in range(config.repeats):
        sha_rates.append(sha256_rate(config.sha_sample))
        for transfer in config.transfers:
            for size in config.sizes:
                # A short size's extra pairs run inside each repeat, not after the others:
                # every size meets the same spells of the machine.
                pairs = config.pairs_per_repeat(size)
                for run in range(repeat * pairs, (repeat + 1) * pairs):
                    samples += run_pair(size, transfer, run, config)
    wandb = run_sidecar(min(config.sizes), config, wandb=True) if config.wandb_check else None
    low = (run_sidecar(max(config.sizes), config, setting=LOW_MEMORY_XET)
           if config.low_memory_check and "xet" in config.transfers else None)
    return samples, sha_rates, wandb, low


def table(samples: list[Sample], sha_rates: list[float], wandb: Sample | None,
          config: Config, low: Sample | None = None) -> Table:
    result = Table("Upload efficiency", [
        "transfer", "size MiB", "sidecar MiB/s", "bare MiB/s", "ratio", "sha256 MiB/s",
        "uploader RSS MiB", "bare RSS MiB", "sidecar CPU s/GiB", "bare CPU s/GiB", "target",
        "met"])
    result.notes += [
        f"{config.repeats} interleaved repeats{_short_runs(config)}, medians of per-pair "
        "ratios; unthrottled "
        "devhub on the same machine; sidecar = completion marker -> verified, bare = one "
        "`HfApi.upload_folder` call; CPU s/GiB = user + system over those same windows; sha256 = "
        "one core hashing memory; RSS = peak, W&B off",
    ]
    if wandb is not None:
        result.notes.append(
            f"with W&B on (offline), {wandb.size / MiB:.0f} MiB: uploader RSS "
            f"{wandb.peak_rss / MiB:.0f} MiB, W&B service process(es) "
            f"{wandb.children_rss / MiB:.0f} MiB, {wandb.rate:.0f} MiB/s")
    if low is not None:
        default = median([s.rate for s in samples if (s.transfer, s.size, s.side)
                          == ("xet", low.size, SIDECAR)])
        result.notes.append(
            f"README's low-memory recipe for Xet ({_shell(LOW_MEMORY_XET)}), one run, "
            f"{low.size / MiB:.0f} MiB: uploader RSS {low.peak_rss / MiB:.0f} MiB, "
            f"{low.rate:.0f} MiB/s ({low.rate / default:.2f}x the sidecar's default above)")
    for transfer in config.transfers:
        for size in config.sizes:
            side = [s for s in samples if (s.transfer, s.size, s.side) == (transfer, size, SIDECAR)]
            bare = [s for s in samples if (s.transfer, s.size, s.side) == (transfer, size, BARE)]
            ratio = median(ratios([s.rate for s in side], [s.rate for s in bare]))
            rss = max(s.peak_rss for s in side) / MiB
            cpu_side = median([s.cpu_per_gib for s in side])
            cpu_bare = median([s.cpu_per_gib for s in bare])
            target, met = _target(size == max(config.sizes), ratio, rss, cpu_side <= cpu_bare)
            result.add(transfer, f"{size / MiB:.0f}", fmt(median([s.rate for s in side]), 0),
                       fmt(median([s.rate for s in bare]), 0), fmt(ratio),
                       fmt(median(sha_rates), 0), fmt(rss, 0),
                       fmt(max(s.peak_rss for s in bare) / MiB, 0), fmt(cpu_side),
                       fmt(cpu_bare), target, met)
    return result


def first_byte_table(samples: list[Sample], config: Config) -> Table:
    result = Table("Time to first byte", [
        "transfer", "size MiB", "detected s", "first upload call s", "first byte s",
        "first >= 1 MiB s", "detected -> verified s", "bare first byte s", "target", "met"])
    result.notes += [
        "the same runs as the upload table, medians of its pairs; sidecar times from "
        "the completion marker landing, bare from the `upload_folder` call; a request's start "
        "= devhub's log time - duration; first byte = the first xorb POST (xet) or LFS object "
        "PUT (lfs); first >= 1 MiB = the first of those with a MiB or more in its body; first "
        "upload call = preupload, LFS batch, Xet token or storage; detected = marker -> the "
        "uploader's detected_at",
    ]
    for transfer in config.transfers:
        for size in config.sizes:
            side = [s.first for s in samples if s.first is not None
                    and (s.transfer, s.size, s.side) == (transfer, size, SIDECAR)]
            bare = [s.first for s in samples if s.first is not None
                    and (s.transfer, s.size, s.side) == (transfer, size, BARE)]
            first_byte = _median_of(side, "first_byte")
            met = first_byte <= TARGET_FIRST_BYTE_S and all(r.first_byte is not None
                                                             for r in side)
            result.add(transfer, f"{size / MiB:.0f}", fmt(_median_of(side, "detected")),
                       fmt(_median_of(side, "first_call")), fmt(first_byte),
                       fmt(_median_of(side, "first_big")),
                       fmt(_median_of(side, "detected_to_verified")),
                       fmt(_median_of(bare, "first_byte")),
                       f"first byte <= {TARGET_FIRST_BYTE_S:g} s", "yes" if met else "no")
    return result


def _short_runs(config: Config) -> str:
    """`(1024 MiB: 9 pairs)`: the sizes repeated more than `config.repeats`."""
    more = [f"{size / MiB:.0f} MiB: {config.runs(size)} pairs" for size in config.sizes
            if config.pairs_per_repeat(size) > 1]
    return f" ({', '.join(more)}, each repeat running its pairs in turn)" if more else ""


def _shell(environ: dict[str, str]) -> str:
    return " ".join(f"{name}={value}" for name, value in environ.items())


def _median_of(runs: list[FirstBytes], name: str) -> float:
    """The median of one FirstBytes field over the runs that have it."""
    return median([v for v in (getattr(r, name) for r in runs) if v is not None])


def _target(largest: bool, ratio: float, rss: float, cpu_ok: bool) -> tuple[str, str]:
    wanted = f">= {TARGET_RATIO}, CPU/GiB <= bare"
    met = ratio >= TARGET_RATIO and cpu_ok
    if largest:
        wanted += f", RSS <= {TARGET_RSS_MB}"
        met = met and rss <= TARGET_RSS_MB
    return wanted, "yes" if met else "no"


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, repeats=3)
    parser.add_argument("--sizes-mb", default="1024,4096,8192",
                        help="comma-separated folder sizes, MiB")
    parser.add_argument("--no-wandb-check", dest="wandb_check", action="store_false",
                        help="skip the extra sidecar run with W&B on")
    parser.add_argument("--no-low-memory-check", dest="low_memory_check", action="store_false",
                        help="skip the extra Xet run with the README's low-memory recipe")
    parser.add_argument("--short-run-factor", type=int, default=SHORT_RUN_FACTOR,
                        help="at most this many sidecar/bare pairs per repeat for a size under "
                        f"{REPEAT_REFERENCE // MiB} MiB (1: one pair, as for larger sizes)")
    parser.add_argument("--transfers", default=",".join(TRANSFERS),
                        help="xet (production's path), lfs (HF_HUB_DISABLE_XET=1), or both")
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.sizes_mb, args.short_run_factor = 1, "12,24", 1
    sizes = tuple(int(float(s) * MiB) for s in args.sizes_mb.split(",") if s.strip())
    transfers = tuple(t for t in args.transfers.split(",") if t.strip())
    if not transfers or set(transfers) - set(TRANSFERS):
        parser.error(f"--transfers takes {', '.join(TRANSFERS)}")
    return Config(sizes=sizes, repeats=args.repeats, wandb_check=args.wandb_check,
                  sha_sample=SHA256_SAMPLE_TINY if args.tiny else SHA256_SAMPLE,
                  work_dir=args.work_dir, transfers=transfers,
                  low_memory_check=args.low_memory_check,
                  short_run_factor=args.short_run_factor)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [BARE_COMMAND]:
        return bare_main(argv[1:])
    config = parse(argv)
    samples, sha_rates, wandb, low = measure(config)
    table(samples, sha_rates, wandb, config, low).print()
    first_byte_table(samples, config).print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
