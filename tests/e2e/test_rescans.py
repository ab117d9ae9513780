"""Filesystem events are hints, the listing is the truth (README, How it works 1): a full rescan
runs at start, after an inotify overflow and every `--scan-interval`.

Each test makes sure the events of a new checkpoint never reach `watch`, so only the rescan
under test can find it: a real inotify overflow (the watcher stopped with SIGSTOP while more
events than the kernel queues for one inotify instance pile up, then the checkpoint is written),
or a polling observer that polls once in ten minutes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from shared.layout import MARKERS_DIRNAME
from shared.run_info import start_run
from tests.e2e.conftest import TOKEN, expected_repo, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, run_uploader, uploader_env
from tests.support.waiting import wait_for
from uploader.errors import ConfigError
from uploader.state import DB_FILENAME, State, StateStore

pytestmark = pytest.mark.e2e

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
# More than this many queued events and the test would spend seconds flooding the queue.
MAX_FLOOD = 200_000
FOUND_TIMEOUT = 60


def verified_folders(out: Path) -> set[str]:
    if not (out / ".uploader" / DB_FILENAME).exists():
        return set()
    try:
        store = StateStore.open(out / ".uploader", readonly=True)
    except ConfigError:  # created a moment ago, its schema not written yet
        return set()
    try:
        return {r.folder for r in store.all() if r.state is State.VERIFIED}
    finally:
        store.close()


def flood(directory: Path, events: int) -> None:
    """At least `events` inotify events on `directory` and nothing left behind: create, close
    and delete one file over and over (never two identical events in a row, which the kernel
    would merge)."""
    path = directory / "flood.tmp"
    for _ in range(events // 2 + 1):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.unlink(path)


@pytest.mark.parametrize("level", ["INFO", "ERROR"])
def test_an_inotify_overflow_triggers_a_full_rescan(hub, api, tmp_path: Path,
                                                    level: str) -> None:
    try:
        limit = int(QUEUE_LIMIT.read_text())
    except (OSError, ValueError):
        pytest.skip("no inotify queue limit to read (not Linux?)")
    if limit > MAX_FLOOD:
        pytest.skip(f"inotify queues {limit} events per instance here: too many to flood")
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    # No interval rescan within the test: only the overflow can send the detect loop looking.
    env = uploader_env(hub.url, TOKEN, WANDB_MODE="disabled")
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--scan-interval", "3600",
                            "--log-level", level], env, tmp_path / "watch.log").start()
    try:
        # --log-level ERROR prints nothing before this: the watcher's heartbeat says it runs.
        health = ["status", "--health", "--output-dir", str(out)]
        wait_for(lambda: run_uploader(health, env).returncode == 0, 60, "the watcher running")
        os.kill(proc.pid, signal.SIGSTOP)  # nothing reads the inotify queues now
        try:
            # The output dir and `.complete/` are watched by one inotify instance each: fill
            # both, so the checkpoint's folder and its marker are both events the kernel drops.
            for directory in (out, out / MARKERS_DIRNAME):
                flood(directory, limit + 1000)
            write_checkpoint(out, 50, run_id=info.run_id)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: "checkpoint-50" in verified_folders(out), FOUND_TIMEOUT,
                 "checkpoint-50 found by the rescan after the overflow, and verified")
        if level == "INFO":  # the overflow really happened: watchdog says so in the log
            assert "queue overflowed" in proc.output(), proc.output()[-3000:]
        assert repos(api) == [expected_repo(out, "checkpoint-50")]
    finally:
        proc.stop()


def test_every_scan_interval_a_full_rescan_finds_what_no_event_announced(
        hub, api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    # The polling observer compares the directory once in ten minutes: within this test no
    # event reaches the detect loop; the rescan every second must find the checkpoint.
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--poll", "--poll-interval",
                            "600", "--scan-interval", "1"],
                           uploader_env(hub.url, TOKEN, WANDB_MODE="disabled"),
                           tmp_path / "watch.log").start()
    try:
        proc.wait_output("first scan done", 60)
        write_checkpoint(out, 50, run_id=info.run_id)
        wait_for(lambda: "checkpoint-50" in verified_folders(out), FOUND_TIMEOUT,
                 "checkpoint-50 found by an interval rescan, and verified")
        assert repos(api) == [expected_repo(out, "checkpoint-50")]
    finally:
        proc.stop()
