"""The uploader gives way to training (issue 15): every thread of a real `watch` runs at the
lower CPU and I/O priority, and hashing and uploads wait while the trainer writes a checkpoint."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from shared.run_info import start_run
from tests.e2e.conftest import TOKEN, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, run_uploader, uploader_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_every_thread_of_watch_runs_at_the_lower_priority(hub, api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    # The defaults (nice 10, lowest best-effort I/O), with SCHED_IDLE asked for on top.
    env = uploader_env(hub.url, TOKEN, UPLOADER_CPU_SCHEDULER="idle")
    proc = UploaderProcess(["watch", "--output-dir", str(out)], env,
                           tmp_path / "watch.log").start()
    try:
        proc.wait_output("checkpoint verified", 90)  # hf_xet's and watchdog's threads exist
        threads = psutil.Process(proc.pid).threads()
        assert len(threads) > 3
        for thread in threads:
            task = psutil.Process(thread.id)
            assert os.sched_getscheduler(thread.id) == os.SCHED_IDLE, (thread.id, task.name())
            assert task.nice() == 10, (thread.id, task.name())
            assert tuple(task.ionice()) == (psutil.IOPRIO_CLASS_BE, 7), (thread.id, task.name())
    finally:
        proc.stop()


def test_uploads_wait_while_the_trainer_writes_a_checkpoint(hub, api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    saving = out / "checkpoint-100"
    saving.mkdir()
    stop_writing = threading.Event()

    def trainer_saving() -> None:  # optimizer.pt growing, as torch.save writes it
        with open(saving / "optimizer.pt", "wb") as fh:
            while not stop_writing.wait(0.1):
                fh.write(b"\0" * 65536)
                fh.flush()

    writer = threading.Thread(target=trainer_saving, daemon=True)
    writer.start()
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--yield-to-saves", "60"],
                           uploader_env(hub.url, TOKEN), tmp_path / "watch.log").start()
    try:
        proc.wait_output("watching", 60)
        write_checkpoint(out, 50, run_id=info.run_id)  # complete, marked: due at once
        proc.wait_output("the trainer is saving a checkpoint", 30)
        assert repos(api) == [], "the upload began while the trainer was saving"
        stopped = time.time()
        stop_writing.set()
        writer.join(10)
        status = ["status", "--json", "--output-dir", str(out)]

        def verified() -> list[dict]:
            rows = json.loads(run_uploader(status, uploader_env(hub.url, None)).stdout or "[]")
            return [r for r in rows if r["state"] == "verified"]

        wait_for(lambda: verified(), 90, "checkpoint-50 verified once the save went quiet")
        (row,) = verified()
        assert row["step"] == 50 and row["verified_at"] >= stopped
    finally:
        stop_writing.set()
        proc.stop()
