"""Scale: start-up and `status` over 10,000 verified checkpoints, the idle cost, lag in a stream.

    python -m bench.scale [--checkpoints 10000] [--idle-seconds 60] [--stream-seconds 300]
                          [--stream-interval 1] [--repeats 3] [--status-runs 5]

1. Start-up and idle. An output dir holding `--checkpoints` verified checkpoints (folders with
   their completion markers, and state rows written through `StateStore` with the detector's own
   versions, as a finished pipeline leaves them) against an empty output dir, interleaved. Each
   run starts `uploader watch --exit-when-done` as compose does, during a run that has not ended
   (so it stays up), at the production log level, and measures: the time from starting the
   process to ready (it logged `watching` and `first scan done`), then the CPU (user + system)
   it uses over the idle window. The window opens half a scan interval after ready, so a
   `--idle-seconds` of one scan interval (the default, 60 s) holds exactly one rescan whatever
   the phase: one opened at ready would see that rescan only partly, or not at all.
   The fixture is written without the durable-write fsyncs (markers: the same bytes as
   `write_marker`; state rows: one transaction): 10,000 checkpoints take seconds, not minutes.
2. `status`. With no watcher running, `python -m uploader status` and `status --json` over the
   same state dir, each a whole process timed from start to exit with its output read through a
   pipe, `--status-runs` times interleaved with `python -m uploader --version` (the process
   start and imports every command pays: the baseline) and `status` over the empty dir;
   medians.
3. Stream. A fresh output dir gets a new small checkpoint every `--stream-interval` seconds for
   `--stream-seconds`; the lag of each (completion marker written -> `verified_at`) should stay
   flat: the last fifth's median against the first fifth's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import (
    REPO_ROOT,
    USER,
    LoggedProcess,
    Table,
    add_common_args,
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
from shared.layout import checkpoint_name, default_state_dir, list_folders, marker_path
from shared.markers import build_marker
from shared.naming import DEFAULT_PREFIX, make_repo_name
from shared.run_info import Outcome, finish_run, start_run
from tests.support.checkpoints import write_checkpoint
from uploader.detect import CompletionDetector, Verdict
from uploader.state import State, StateStore

EMPTY, VERIFIED = "empty dir", "verified dir"
VARIANTS = (EMPTY, VERIFIED)
SMALL_FILE = 4096  # adapter and optimizer bytes of each checkpoint: scale is about counts
WATCH_ARGS = ("watch", "--exit-when-done")
READY_MESSAGES = ("watching", "first scan done")
SCAN_INTERVAL_S = 60.0  # the production default (`--scan-interval`), which the bench keeps
# Logs as JSON lines at the production level (INFO), for the ready messages' times.
LOG_SETTINGS = {"UPLOADER_LOG_FORMAT": "json"}
STREAM_WINDOW = 5  # lag is compared between the first and the last fifth of the stream
TARGET_READY_S = 2.0
TARGET_IDLE_PCT = 0.3  # of one core, over the idle window
TARGET_STATUS_S = 1.0
TARGET_LAG_GROWTH_S = 1.0
START_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 900.0
STATUS_TIMEOUT_S = 120.0
# The `status` commands timed, each a fresh process: (name, uploader arguments, which dir).
VERSION, STATUS_EMPTY, STATUS, STATUS_JSON = ("--version", "status (empty dir)", "status",
                                              "status --json")
STATUS_COMMANDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    VERSION: (("--version",), None),
    STATUS_EMPTY: (("status",), EMPTY),
    STATUS: (("status",), VERIFIED),
    STATUS_JSON: (("status", "--json"), VERIFIED),
}


@dataclass(frozen=True)
class Config:
    checkpoints: int
    idle_seconds: float
    stream_seconds: float
    stream_interval: float
    repeats: int
    work_dir: Path | None
    status_runs: int = 5


@dataclass(frozen=True)
class IdleSample:
    variant: str
    ready_s: float
    cpu_pct: float  # of one core, over the idle window


@dataclass(frozen=True)
class StatusSample:
    command: str  # a key of STATUS_COMMANDS
    seconds: float  # process start -> exit, output read


@dataclass(frozen=True)
class StreamResult:
    written: int
    verified: int
    first_lag: float  # median lag of the first fifth, s
    last_lag: float
    max_lag: float
    slope: float  # lag change per minute of stream, least squares


# -- 1. start-up and idle ------------------------------------------------------------------

def build_verified(out: Path, count: int, endpoint: str) -> None:
    """`count` checkpoints with markers, recorded as verified exactly as the pipeline would.

    Only the durability is skipped: markers are the bytes `write_marker` writes, without its
    two fsyncs each, and the rows go in through `StateStore` in one transaction instead of two
    fsynced commits each (about 50 s for 10,000 otherwise)."""
    info = start_run(out, base_model="bench", resume=False)
    for step in range(1, count + 1):
        name = checkpoint_name(step)
        write_checkpoint(out, step, run_id=info.run_id, marker=False,
                         adapter_bytes=SMALL_FILE, optimizer_bytes=SMALL_FILE)
        marker = build_marker(out, name, run_id=info.run_id, step=step)
        path = marker_path(out, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(marker.to_json(), indent=2, sort_keys=True) + "\n")
    detector = CompletionDetector(out, settle_seconds=0)
    now = time.time()
    with StateStore.open(default_state_dir(out)) as store:
        conn = store._conn  # a fixture only: one transaction, the same rows
        conn.execute("BEGIN")
        for ref in list_folders(out):
            detection = detector.check(ref)
            version = detection.version
            if detection.verdict is not Verdict.COMPLETE or version is None:
                raise RuntimeError(f"{ref.name} is not complete: {detection.reason}")
            repo_id = make_repo_name(USER, DEFAULT_PREFIX, ref.kind, version.step,
                                     version.timestamp).repo_id
            record = store.add(version, repo_id=repo_id, url=f"{endpoint}/{repo_id}",
                               metrics={}, state=State.VERIFIED)
            store.update(record.id, attempts=1, commit_sha="0" * 40, uploaded_at=now,
                         verified_at=now, upload_seconds=0.0)
        conn.execute("COMMIT")


def build_empty(out: Path) -> None:
    start_run(out, base_model="bench", resume=False)


def log_records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short while being written
    return records


def ready_at(text: str) -> float | None:
    """When both `watching` and `first scan done` were logged (the later of the two)."""
    records = log_records(text)
    first: dict[str, float] = {}
    for record in records:
        first.setdefault(str(record.get("message")), record["time"])
    if not all(message in first for message in READY_MESSAGES):
        return None
    return max(first[message] for message in READY_MESSAGES)


def idle_once(variant: str, out: Path, endpoint: str, root: Path, config: Config) -> IdleSample:
    env = uploader_env(endpoint, root / "hf-home", **LOG_SETTINGS)
    log = root / f"uploader-{variant.replace(' ', '-')}.log"
    log.unlink(missing_ok=True)
    uploader = LoggedProcess.uploader([*WATCH_ARGS, "--output-dir", str(out)], env, log)
    try:
        uploader.wait_for(lambda text: ready_at(text) is not None, START_TIMEOUT_S,
                          f"uploader ready ({variant})")
        ready_epoch = ready_at(uploader.output()) or 0.0
        ready = ready_epoch - uploader.started_at
        # Rescans come every SCAN_INTERVAL_S from the first scan: half an interval after
        # ready lies half an interval from either (the tiny run keeps its short window).
        opens = ready_epoch + min(config.idle_seconds, SCAN_INTERVAL_S) / 2
        time.sleep(max(0.0, opens - time.time()))
        process = psutil.Process(uploader.pid)
        before = cpu_seconds(process)
        time.sleep(config.idle_seconds)
        used = cpu_seconds(process) - before
    finally:
        uploader.stop()
    return IdleSample(variant, ready, 100.0 * used / config.idle_seconds)


def measure_idle(config: Config) -> tuple[list[IdleSample], list[StatusSample]]:
    samples = []
    with scratch(config.work_dir, "bench-scale-") as root, devhub(root / "hub") as hub:
        dirs = {EMPTY: root / "empty", VERIFIED: root / "verified"}
        build_empty(dirs[EMPTY])
        started = time.monotonic()
        build_verified(dirs[VERIFIED], config.checkpoints, hub.url)
        print(f"fixture: {config.checkpoints} verified checkpoints in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        for repeat, variant in rotations(VARIANTS, config.repeats):
            sample = idle_once(variant, dirs[variant], hub.url, root, config)
            print(f"repeat {repeat + 1}/{config.repeats} {variant}: ready "
                  f"{sample.ready_s:.2f} s, idle CPU {sample.cpu_pct:.2f}% of a core", flush=True)
            samples.append(sample)
        statuses = measure_status(dirs, hub.url, root, config)
    return samples, statuses


# -- 2. status -----------------------------------------------------------------------------

def status_once(command: str, dirs: dict[str, Path], env: dict[str, str], checkpoints: int
                ) -> StatusSample:
    args, which = STATUS_COMMANDS[command]
    where = ["--output-dir", str(dirs[which])] if which is not None else []
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "uploader", *args, *where], env=env,
                            capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=STATUS_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"uploader {' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    if command == STATUS_JSON and len(json.loads(result.stdout)) != checkpoints:
        raise RuntimeError(f"status --json listed {len(json.loads(result.stdout))} rows, "
                           f"not {checkpoints}")
    return StatusSample(command, seconds)


def measure_status(dirs: dict[str, Path], endpoint: str, root: Path, config: Config
                   ) -> list[StatusSample]:
    env = uploader_env(endpoint, root / "hf-home")
    samples = []
    for repeat, command in rotations(list(STATUS_COMMANDS), config.status_runs):
        sample = status_once(command, dirs, env, config.checkpoints)
        print(f"status run {repeat + 1}/{config.status_runs} {command}: "
              f"{sample.seconds:.2f} s", flush=True)
        samples.append(sample)
    return samples


# -- 3. a steady stream --------------------------------------------------------------------

def measure_stream(config: Config) -> StreamResult:
    count = max(1, int(config.stream_seconds / config.stream_interval))
    with scratch(config.work_dir, "bench-stream-") as root, devhub(root / "hub") as hub:
        out = root / "out"
        info = start_run(out, base_model="bench", resume=False)
        env = uploader_env(hub.url, root / "hf-home")
        uploader = LoggedProcess.uploader([*WATCH_ARGS, "--output-dir", str(out)], env,
                                          root / "uploader.log")
        try:
            uploader.wait_for(lambda text: "watching" in text, START_TIMEOUT_S, "uploader start")
            started = time.monotonic()
            for index in range(count):
                time.sleep(max(0.0, started + index * config.stream_interval - time.monotonic()))
                write_checkpoint(out, index + 1, run_id=info.run_id, adapter_bytes=SMALL_FILE,
                                 optimizer_bytes=SMALL_FILE)
            finish_run(out, Outcome.COMPLETED)
            uploader.wait(DRAIN_TIMEOUT_S + config.stream_seconds)
        finally:
            uploader.stop()
        rows = status_rows(out, env)
    return stream_result(count, rows)


def stream_result(written: int, rows: list[dict]) -> StreamResult:
    done = sorted((r["completed_at"], r["verified_at"] - r["completed_at"]) for r in rows
                  if r["state"] == "verified" and r["verified_at"] is not None)
    if not done:
        nan = float("nan")
        return StreamResult(written, 0, nan, nan, nan, nan)
    window = max(1, len(done) // STREAM_WINDOW)
    lags = [lag for _, lag in done]
    return StreamResult(written, len(done), median(lags[:window]), median(lags[-window:]),
                        max(lags), 60.0 * slope([t for t, _ in done], lags))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


# -- the table -----------------------------------------------------------------------------

def table(samples: list[IdleSample], stream: StreamResult, config: Config,
          statuses: list[StatusSample] | None = None) -> Table:
    result = Table("Scale", ["metric", "value", "baseline", "ratio", "target", "met"])
    timed = {c: [s.seconds for s in statuses or [] if s.command == c] for c in STATUS_COMMANDS}
    result.notes += [
        f"{config.repeats} interleaved repeats of `watch --exit-when-done` (run not ended) on "
        f"{config.checkpoints} verified checkpoints (baseline: an empty output dir), medians; "
        f"ready = process start -> `watching` and `first scan done` logged; idle CPU = user + "
        f"system over {config.idle_seconds:g} s from "
        f"{min(config.idle_seconds, SCAN_INTERVAL_S) / 2:g} s after ready "
        f"({rescans_inside(config.idle_seconds)} inside), W&B off, production settings (scan "
        f"every {SCAN_INTERVAL_S:g} s, INFO logs)",
        f"status: {config.status_runs} interleaved runs of each command as its own process "
        "(start -> exit, output read from a pipe, no watcher running), medians; baseline = "
        f"`uploader --version` (process start and imports); `status` over the empty dir "
        f"{fmt(median(timed[STATUS_EMPTY]))} s",
        f"stream: a checkpoint every {config.stream_interval:g} s for {config.stream_seconds:g} "
        f"s; lag = marker written -> verified; first/last fifth medians; max lag "
        f"{fmt(stream.max_lag)} s, slope {fmt(stream.slope, 3)} s per minute",
    ]
    by = {v: [s for s in samples if s.variant == v] for v in VARIANTS}
    ready = median([s.ready_s for s in by[VERIFIED]])
    result.add(f"ready, s ({config.checkpoints} verified)", fmt(ready),
               fmt(median([s.ready_s for s in by[EMPTY]])),
               fmt(median(ratios([s.ready_s for s in by[VERIFIED]],
                                 [s.ready_s for s in by[EMPTY]]))),
               f"<= {TARGET_READY_S:g}", _yes(ready <= TARGET_READY_S))
    idle = median([s.cpu_pct for s in by[VERIFIED]])
    result.add(f"idle CPU, % of a core ({config.idle_seconds:g} s)", fmt(idle),
               fmt(median([s.cpu_pct for s in by[EMPTY]])),
               fmt(median(ratios([s.cpu_pct for s in by[VERIFIED]],
                                 [s.cpu_pct for s in by[EMPTY]]))),
               f"<= {TARGET_IDLE_PCT:g}", _yes(idle <= TARGET_IDLE_PCT))
    for command in (STATUS, STATUS_JSON):
        value = median(timed[command])
        result.add(f"`{command}`, s ({config.checkpoints} verified)", fmt(value),
                   fmt(median(timed[VERSION])),
                   fmt(median(ratios(timed[command], timed[VERSION]))),
                   f"<= {TARGET_STATUS_S:g}", _yes(value <= TARGET_STATUS_S))
    growth = stream.last_lag - stream.first_lag
    result.add("stream lag, s (last fifth vs first)", fmt(stream.last_lag),
               fmt(stream.first_lag), fmt(stream.last_lag / stream.first_lag
                                          if stream.first_lag > 0 else None),
               f"flat (+<= {TARGET_LAG_GROWTH_S:g} s)",
               _yes(growth <= TARGET_LAG_GROWTH_S and stream.verified == stream.written))
    result.add("stream checkpoints verified", f"{stream.verified}/{stream.written}", "-", "-",
               "all", _yes(stream.verified == stream.written))
    return result


def rescans_inside(idle_seconds: float) -> str:
    """How many rescans the idle window holds: it opens half an interval after ready."""
    opens = min(idle_seconds, SCAN_INTERVAL_S) / 2
    count = int((opens + idle_seconds) // SCAN_INTERVAL_S) if opens < SCAN_INTERVAL_S else 0
    return "one rescan" if count == 1 else f"{count} rescans"


def _yes(met: bool) -> str:
    return "yes" if met else "no"


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, repeats=3)
    parser.add_argument("--checkpoints", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--stream-seconds", type=float, default=300.0)
    parser.add_argument("--stream-interval", type=float, default=1.0)
    parser.add_argument("--status-runs", type=int, default=5,
                        help="times each `status` command runs (interleaved); medians")
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.checkpoints, args.idle_seconds, args.stream_seconds = 1, 200, 2.0, 5.0
        args.status_runs = 1
    return Config(checkpoints=args.checkpoints, idle_seconds=args.idle_seconds,
                  stream_seconds=args.stream_seconds, stream_interval=args.stream_interval,
                  repeats=args.repeats, work_dir=args.work_dir, status_runs=args.status_runs)


def main(argv: list[str] | None = None) -> int:
    config = parse(sys.argv[1:] if argv is None else argv)
    samples, statuses = measure_idle(config)
    stream = measure_stream(config)
    table(samples, stream, config, statuses).print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
