"""What the benchmarks share: the machine line, medians and tables, processes and their samples.

Sizes are binary: 1 MiB = 2**20 bytes, and every "MB" a table prints is a MiB.
"""

from __future__ import annotations

import os

# Before huggingface_hub is imported anywhere in this process: it reads these at import time.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import contextlib
import ctypes
import json
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devhub.testing import DevHub

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB
USER = "bench"
# devhub's token, not a real Hub one
TOKEN = "hf_bench_write_token_for_devhub_only"
SAMPLE_INTERVAL_S = 0.05  # RSS sampling period: short enough to catch a hashing buffer's peak
POLL_S = 0.02
STOP_TIMEOUT_S = 30.0
# The uploader's own settings are left at their production defaults (the transfer too: auto).
UPLOADER_BASE_SETTINGS: dict[str, str] = {}
# "xet": what production takes (devhub serves Xet); "lfs": the user's HF_HUB_DISABLE_XET=1.
TRANSFERS = ("xet", "lfs")


# -- the machine and the numbers ---------------------------------------------------------------

def machine() -> str:
    """One line naming the machine, for the README next to the tables."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        model = next((line.split(":", 1)[1].strip() for line in info
                      if line.startswith("model name")), model)
    ram = psutil.virtual_memory().total / GiB
    return (f"{os.cpu_count()} CPUs ({model}), {ram:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratios(values: Sequence[float], baselines: Sequence[float]) -> list[float]:
    """Per-repeat ratios: repeat i of a variant against repeat i of the baseline."""
    return [v / b for v, b in zip(values, baselines, strict=True) if b > 0]


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def rotated(variants: Sequence[str], repeat: int) -> list[str]:
    """The variants in the order of one repeat: each repeat starts one variant later, so no
    variant always runs first (a cold cache) or right after the heaviest one."""
    shift = repeat % len(variants)
    return [*variants[shift:], *variants[:shift]]


def rotations(variants: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, variant) in run order, every repeat `rotated`."""
    return [(repeat, v) for repeat in range(repeats) for v in rotated(variants, repeat)]


@dataclass
class Table:
    """A markdown table, ready to paste into the README."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        line = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join([line, rule, *body])

    def print(self) -> None:
        """Title, machine and notes first, so the table itself is the last thing printed."""
        print(f"\n## {self.title}\n")
        print(f"machine: {machine()}")
        for note in self.notes:
            print(f"- {note}")
        print()
        print(self.render(), flush=True)


def add_common_args(parser: argparse.ArgumentParser, repeats: int) -> None:
    parser.add_argument("--repeats", type=int, default=repeats,
                        help="times each variant runs (interleaved); medians are reported")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where temporary folders go (default: the system temp dir)")
    parser.add_argument("--tiny", action="store_true",
                        help="seconds-long sizes for the smoke test; the figures mean nothing")


@contextlib.contextmanager
def scratch(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A temporary folder, removed afterwards: the benchmarks write gigabytes."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- devhub and the uploader -------------------------------------------------------------------

def devhub(data_dir: Path, faults: list[dict[str, Any]] | None = None) -> DevHub:
    return DevHub(data_dir, users={USER: TOKEN}, faults=faults)


def client_env(endpoint: str, home: Path, transfer: str = "xet", **extra: str) -> dict[str, str]:
    """Environment for a Hub client process: this devhub, its token, nothing inherited that
    would point it elsewhere, W&B off unless `extra` turns it on. `transfer` "lfs" sets the
    ecosystem's switch (HF_HUB_DISABLE_XET=1), so both sides of a comparison move bytes alike."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUB_", "UPLOADER_", "TRAINER_", "WANDB_"))}
    if transfer == "lfs":
        env["HF_HUB_DISABLE_XET"] = "1"
    env |= {"HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONPATH"] = pythonpath
    return env | extra


def uploader_env(endpoint: str, home: Path, transfer: str = "xet", **extra: str
                 ) -> dict[str, str]:
    return client_env(endpoint, home, transfer, **UPLOADER_BASE_SETTINGS, **extra)


def _load_prctl() -> Callable[..., int] | None:
    # Looked up here, in the parent: the child may only make the call (a dlopen between fork
    # and exec, in a parent with threads, can deadlock).
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """For `preexec_fn`: the child gets SIGKILL when the bench process dies.

    An interrupted bench (Ctrl-C, `pkill -f "python -m bench"`) otherwise leaves its children
    running: an orphaned busy loop of the training bench once loaded a core through a whole
    later run. Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op.
    """
    def arm() -> None:
        if _PRCTL is None:
            return
        if _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the bench died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class LoggedProcess:
    """A child process with stdout and stderr in one log file, killed if the bench dies.

    Created from the main thread only: the kernel sends the death signal when the creating
    *thread* ends.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.started_at = time.time()
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(list(command), env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                         preexec_fn=_die_with_parent(os.getpid()))

    @classmethod
    def uploader(cls, args: Sequence[str], env: dict[str, str], log_path: Path) -> LoggedProcess:
        return cls([sys.executable, "-m", "uploader", *args], env, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, found: Callable[[str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not found(self.output()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what}: process exited {self.proc.returncode}; "
                                   f"log {self.log_path}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s; log {self.log_path}")
            time.sleep(POLL_S)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"still running after {timeout:.0f}s; log {self.log_path}:\n"
                               f"{self.output()[-3000:]}") from None

    def stop(self) -> None:
        """SIGTERM (the uploader drains and exits), SIGKILL if it hangs."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def status_rows(output_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """`uploader status --json`: one row per checkpoint, with completed_at and verified_at."""
    result = subprocess.run([sys.executable, "-m", "uploader", "status", "--json",
                             "--output-dir", str(output_dir)], env=env, capture_output=True,
                            text=True, check=True, cwd=REPO_ROOT)
    return json.loads(result.stdout)


# -- samples of a process --------------------------------------------------------------------

class ProcessSampler:
    """Samples a process in a thread: peak RSS (its own, and its descendants' together) and the
    CPU it and its descendants used so far, which stays readable after the process exits."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.children_peak = 0
        self.cpu = 0.0
        self.cpu_samples: list[tuple[float, float]] = []  # (epoch, cpu so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)
                self.children_peak = max(self.children_peak, self._children_rss())
                self.cpu = max(self.cpu, cpu_seconds(self.process))
                self.cpu_samples.append((time.time(), self.cpu))
            if self._stop.wait(SAMPLE_INTERVAL_S):
                return

    def cpu_at(self, when: float) -> float:
        """CPU used by `when` (epoch), interpolated between the samples either side of it (the
        last sample when `when` is later than all of them)."""
        before = [(t, c) for t, c in self.cpu_samples if t <= when]
        after = [(t, c) for t, c in self.cpu_samples if t > when]
        if not before:
            return after[0][1] if after else 0.0
        if not after:
            return before[-1][1]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0)

    def _children_rss(self) -> int:
        total = 0
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of a process and its live descendants."""
    total = 0.0
    for proc in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total
