"""No evidence the run ended, no exit (README, "A plain `Trainer` script"): a run that saves
nothing at its end, or crashes, gives no such evidence and `watch` keeps watching.

`watch --exit-when-done` uploads and verifies everything present, then must go on watching: the
test waits until the watcher's heartbeat (what `status --health` reads) shows its loops still
running well past the last verification, more than long enough for the exit-when-done check to
have fired. Then the missing evidence is written, and the same watcher exits 0: the observation
window was long enough to see an exit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import TOKEN, expected_repo, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, uploader_env
from tests.support.waiting import wait_for
from uploader.errors import ConfigError
from uploader.pipeline import HEARTBEAT_KEY
from uploader.state import DB_FILENAME, State, StateStore

pytestmark = pytest.mark.e2e

# `watch` reads the run-end evidence every 2 s (uploader.cli.watch.RUN_END_CHECK_INTERVAL) and
# writes its heartbeat every 5 s. With the evidence there from the start, it exits within about
# a second of the last verification (the run-end grace is 0.5 s here): a beat this long after it
# means the exit-when-done check ran and found nothing to end on.
STILL_WATCHING_S = 3.0
MAX_STEPS = 450  # what tests.support.checkpoints writes into trainer_state.json


def state_of(out: Path) -> tuple[list, float | None]:
    """(records, heartbeat: the time the watcher's loops last ran, as it last recorded it)."""
    if not (out / ".uploader" / DB_FILENAME).exists():
        return [], None
    try:
        store = StateStore.open(out / ".uploader", readonly=True)
    except ConfigError:  # created a moment ago, its schema not written yet
        return [], None
    try:
        beat = store.meta_get(HEARTBEAT_KEY)
        return store.all(), float(beat) if beat else None
    finally:
        store.close()


def all_verified(out: Path, folders: set[str]) -> float | None:
    """The time the last of `folders` was verified, once every one of them is; else None."""
    records, _ = state_of(out)
    done = {r.folder: r.verified_at for r in records if r.state is State.VERIFIED}
    if set(done) != folders:
        return None
    return max(t for t in done.values() if t is not None)


def kept_watching(proc: UploaderProcess, out: Path, folders: set[str]) -> None:
    verified_at = wait_for(lambda: all_verified(out, folders), 60,
                           f"{sorted(folders)} verified")

    def beat_after() -> bool:
        assert proc.running(), f"watch exited without evidence the run ended:\n{proc.output()}"
        _, beat = state_of(out)
        return beat is not None and beat >= verified_at + STILL_WATCHING_S

    wait_for(beat_after, 30, f"a heartbeat {STILL_WATCHING_S:g} s after the last verification")
    assert proc.running(), proc.output()[-3000:]


@pytest.mark.parametrize("run", ["plain-trainer-stopped-short", "sidecar-trainer-killed"])
def test_without_evidence_the_run_ended_watch_keeps_watching(hub, api, tmp_path: Path,
                                                             run: str) -> None:
    out = tmp_path / "out"
    if run == "plain-trainer-stopped-short":
        # A plain Trainer (no run info, no markers) whose last save is short of max_steps: it
        # crashed at step 400, or it runs to 450 and saves nothing at its end.
        write_checkpoint(out, 400, run_id=None, marker=False)
    else:
        # A trainer with the sidecar's callback killed (-9, OOM): its run info never finished.
        info = start_run(out, base_model="tiny", resume=False)
        write_checkpoint(out, 400, run_id=info.run_id)
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--exit-when-done",
                            "--settle-seconds", "0.5", "--run-end-grace", "0.5"],
                           uploader_env(hub.url, TOKEN, WANDB_MODE="disabled"),
                           tmp_path / "watch.log").start()
    try:
        kept_watching(proc, out, {"checkpoint-400"})
        assert repos(api) == [expected_repo(out, "checkpoint-400")]
        # The evidence arrives: the same watcher now ends, having uploaded what came with it.
        if run == "plain-trainer-stopped-short":
            last = write_checkpoint(out, MAX_STEPS, run_id=None, marker=False)
            settled = time.time() - 60  # complete at the end's scan, not settling in the grace
            for path in last.iterdir():
                os.utime(path, (settled, settled))
        else:
            finish_run(out, Outcome.COMPLETED)
        assert proc.wait(60) == 0, proc.output()[-3000:]
    finally:
        proc.stop()
    expected = {"checkpoint-400"} | ({f"checkpoint-{MAX_STEPS}"}
                                     if run == "plain-trainer-stopped-short" else set())
    assert all_verified(out, expected) is not None
