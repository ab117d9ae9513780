"""W&B around the real uploader: never in the way of an upload, one run across restarts."""

from __future__ import annotations

import threading
import time

import pytest

from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import TOKEN, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, uploader_env
from tests.support.waiting import wait_for
from tests.support.wandb_records import read_runs

pytestmark = pytest.mark.e2e


def write_run(out, steps):
    info = start_run(out, base_model="tiny", resume=False, wandb_project="sidecar-tests")
    for step in steps:
        write_checkpoint(out, step, run_id=info.run_id)
    finish_run(out, Outcome.COMPLETED)


def test_wandb_hanging_or_failing_never_delays_uploads(hub, api, tmp_path, monkeypatch, capsys):
    """wandb.init blocks forever and wandb.log raises: every checkpoint is still verified."""
    import wandb

    from uploader.cli import main
    from uploader.state import State, StateStore

    out = tmp_path / "out"
    write_run(out, (50, 100, 150))
    released = threading.Event()
    calls = []

    def hanging_init(*args, **kwargs):
        calls.append("init")
        released.wait(60)
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", hanging_init)
    for key, value in uploader_env(hub.url, TOKEN, WANDB_MODE="offline").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    started = time.time()
    try:
        code = main(["backfill", "--output-dir", str(out)])
    finally:
        released.set()
    assert code == 0, capsys.readouterr().err
    store = StateStore.open(out / ".uploader", readonly=True)
    records = store.all()
    store.close()
    assert [r.state for r in records] == [State.VERIFIED] * 3
    # Uploads finished long before a W&B timeout could have passed, and W&B was really called.
    assert max(r.verified_at for r in records) - started < 20
    assert calls == ["init"]
    assert len(repos(api)) == 3


def test_three_kill_9_restarts_leave_one_wandb_run(hub, api, tmp_path):
    out = tmp_path / "out"
    write_run(out, (50, 100, 150, 200))
    env = uploader_env(hub.url, TOKEN, WANDB_MODE="offline")
    # Slow uploads so each uploader lives long enough to start its W&B run before the kill.
    hub.add_faults({"action": "delay", "path": "/commit/", "seconds": 2})
    for i in range(3):
        proc = UploaderProcess(["watch", "--output-dir", str(out)], env,
                               tmp_path / f"run{i}.log").start()
        proc.wait_output("W&B run started", 90)
        # Kill once this session's run record is on disk (wandb-core flushes every ~2 s).
        wait_for(lambda n=i + 1: len(identified_runs(out)) >= n, 30, "run record on disk")
        proc.kill9()
    hub.clear_faults()
    final = UploaderProcess(["watch", "--output-dir", str(out), "--exit-when-done"], env,
                            tmp_path / "final.log").start()
    assert final.wait(120) == 0, final.output()
    identified = wait_for(lambda: len(identified_runs(out)) >= 4 and identified_runs(out), 30,
                          "four offline W&B sessions")
    assert len({run.run_id for run in identified}) == 1
    assert len(repos(api)) == 4


def identified_runs(out):
    """Offline run folders holding a run record (a file cut before it has no run at all)."""
    return [run for run in read_runs(out / ".uploader") if run.run_id]
