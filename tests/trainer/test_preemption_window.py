"""A preemption between `trainer_state.json` and the completion marker, with a real Trainer.

Trainer writes a checkpoint's files, `trainer_state.json` last, rotates, and only then calls
`on_save`, where the marker is written. SIGTERM in that window leaves a finished save without a
marker, and the run recorded failed, so the uploader's settle rules may upload it (named by
`trainer_state.json`'s mtime). The rule: the checkpoint a run resumes from is complete, and gets
its marker. `--resume latest` (and a plain `Trainer.train(resume_from_checkpoint=...)` with
`SidecarCallback`) resumes from that unmarked, finished save, marks it without touching a file,
so the uploader's version key and repo id stay the same, and that step is never saved again. A
half-written folder (`trainer_state.json` missing or truncated) is never resumed from; its step
is saved again in full.

Each run is a subprocess (`preemption_driver.py`) that sends itself SIGTERM at that point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.layout import FolderRef, Kind
from shared.markers import read_marker
from shared.naming import format_timestamp
from shared.run_info import Outcome, read_run_info
from uploader.detect import CompletionDetector, Detection, Verdict

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("preemption_driver.py")
ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120
TERMINATED = 143  # `python -m trainer`'s exit code on SIGTERM
TRAINER_ARGS = ["--base-model", "tiny", "--max-steps", "6", "--save-steps", "2",
                "--eval-steps", "100", "--logging-steps", "2", "--max-train-samples", "32",
                "--max-eval-samples", "4", "--per-device-train-batch-size", "2",
                "--gradient-accumulation-steps", "1", "--f1-max-samples", "2",
                "--f1-max-new-tokens", "4", "--max-seq-length", "160"]


def driver_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "TRAINER_"))}
    return env | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                  "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}


@dataclass(frozen=True)
class Run:
    code: int
    log: str
    begins: list[int]  # the step each train() of this run started from
    saves: list[int]  # the steps this run saved (reaching the marker callback)


def drive(workdir: Path, where: str, *args: str) -> Run:
    """One driver process; what it probed (this run's lines only)."""
    probe = workdir / "probe.jsonl"
    seen = len(probe.read_text().splitlines()) if probe.exists() else 0
    done = subprocess.run([sys.executable, str(DRIVER), str(probe), where, *args],
                          cwd=workdir, env=driver_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    rows = [json.loads(line) for line in probe.read_text().splitlines()[seen:]]
    return Run(done.returncode, done.stdout + done.stderr,
               [r["step"] for r in rows if r["event"] == "begin"],
               [r["step"] for r in rows if r["event"] == "save"])


def trainer(out: Path, where: str, *extra: str) -> Run:
    return drive(out.parent, where, *TRAINER_ARGS, "--output-dir", str(out), *extra)


def stats(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file's (size, mtime_ns, inode): what the uploader's version key is made of."""
    rows = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        if not path.is_dir():
            rows[path.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return rows


def uploader_view(out: Path, step: int, *, run_running: bool) -> Detection:
    """What a freshly started uploader decides about checkpoint-<step> (no settle wait)."""
    detector = CompletionDetector(out, 0.0, clock=lambda: time.time() + 1,
                                  markers_expected=lambda: run_running)
    return detector.check(FolderRef(Kind.CHECKPOINT, f"checkpoint-{step}", step))


def global_step(out: Path, step: int) -> int:
    return json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())[
        "global_step"]


@dataclass(frozen=True)
class Preempted:
    out: Path  # the run's output dir, preempted in the window at step 4
    pristine: Path  # a copy of it as the preemption left it (mtimes kept)
    run: Run


@pytest.fixture(scope="module")
def preempted(tmp_path_factory: pytest.TempPathFactory) -> Preempted:
    """6 steps, a save every 2; SIGTERM at step 4 after trainer_state.json, before the marker."""
    out = tmp_path_factory.mktemp("window") / "out"
    run = trainer(out, "marker:4")
    assert run.code == TERMINATED, run.log[-3000:]
    pristine = out.parent / "pristine"
    shutil.copytree(out, pristine, symlinks=True)
    return Preempted(out, pristine, run)


def test_preempted_before_the_marker_resumes_from_that_step_and_marks_it(
        preempted: Preempted) -> None:
    out, first = preempted.out, preempted.run
    assert first.saves == [2, 4]
    info = read_run_info(out)
    assert info is not None and info.outcome is Outcome.FAILED
    assert global_step(out, 4) == 4 and read_marker(out, "checkpoint-4") is None
    assert read_marker(out, "checkpoint-2") is not None
    # The run ended failed: the uploader's settle rules take the unmarked folder.
    before = uploader_view(out, 4, run_running=False)
    assert before.verdict is Verdict.COMPLETE and before.version is not None
    assert before.version.detected_by == "settle"
    files_before = stats(out / "checkpoint-4")

    resumed = trainer(out, "none", "--resume", "latest")
    assert resumed.code == 0, resumed.log[-3000:]
    assert resumed.begins == [4]  # not 2: the finished save is resumed from
    assert resumed.saves == [6]  # step 4 is never saved a second time
    assert "saved completely but not marked" in resumed.log

    # Marked with this run's id, every file untouched (sizes, mtimes, inodes) ...
    assert stats(out / "checkpoint-4") == files_before
    marker = read_marker(out, "checkpoint-4")
    assert marker is not None and marker.run_id == info.run_id and marker.step == 4
    assert marker.matches(out / "checkpoint-4")
    # ... so the uploader sees the same version (one record) under the same repo timestamp,
    # whether it took the folder by the settle rules before or by the marker now.
    after = uploader_view(out, 4, run_running=True)
    assert after.verdict is Verdict.COMPLETE and after.version is not None
    assert after.version.detected_by == "marker"
    assert after.version.version_key == before.version.version_key
    assert format_timestamp(after.version.timestamp) == format_timestamp(
        before.version.timestamp)
    final = read_run_info(out)
    assert final is not None and final.outcome is Outcome.COMPLETED
    assert final.run_id == info.run_id and (out / "final").is_dir()


@pytest.mark.parametrize("half_written", ["state", "before-state"],
                         ids=["trainer_state-truncated", "trainer_state-missing"])
def test_a_half_written_checkpoint_is_never_resumed_from(
        preempted: Preempted, tmp_path: Path, half_written: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(preempted.pristine, out, symlinks=True)
    # Resumed from the unmarked checkpoint-4; preempted again, inside the save of step 6.
    second = trainer(out, f"{half_written}:6", "--resume", "latest")
    assert second.code == TERMINATED, second.log[-3000:]
    assert second.begins == [4] and second.saves == []
    state = out / "checkpoint-6" / "trainer_state.json"
    if half_written == "state":
        with pytest.raises(ValueError):
            json.loads(state.read_text())
    else:
        assert not state.exists()
    assert read_marker(out, "checkpoint-6") is None
    assert read_marker(out, "checkpoint-4") is not None
    info = read_run_info(out)
    assert info is not None and info.outcome is Outcome.FAILED
    # Neither road of the uploader takes the half-written folder: no repo holds its bytes.
    assert uploader_view(out, 6, run_running=False).verdict is Verdict.NOT_YET
    checkpoint_4 = stats(out / "checkpoint-4")
    half = stats(out / "checkpoint-6")

    third = trainer(out, "none", "--resume", "latest")
    assert third.code == 0, third.log[-3000:]
    assert third.begins == [4]  # not 6
    assert third.saves == [6]
    assert stats(out / "checkpoint-4") == checkpoint_4
    # Step 6 saved again in full: every file rewritten, none left from the half-written save.
    assert global_step(out, 6) == 6
    newest_half = max(mtime for _, mtime, _ in half.values())
    assert all(mtime > newest_half for _, mtime, _ in stats(out / "checkpoint-6").values())
    marker = read_marker(out, "checkpoint-6")
    assert marker is not None and marker.matches(out / "checkpoint-6")
    detection = uploader_view(out, 6, run_running=True)
    assert detection.verdict is Verdict.COMPLETE and detection.version is not None
    assert detection.version.detected_by == "marker"


def test_sidecar_marks_the_checkpoint_a_plain_trainer_resumes_from(tmp_path: Path) -> None:
    """A user's `Trainer.train(resume_from_checkpoint=True)` with `SidecarCallback`."""
    out = tmp_path / "out"
    first = drive(tmp_path, "marker:2", "--sidecar", str(out), "4")
    assert first.code == -15, first.log[-3000:]  # no handler in a user script: SIGTERM kills it
    assert first.saves == [2] and read_marker(out, "checkpoint-2") is None
    info = read_run_info(out)
    assert info is not None and info.outcome is None  # killed: no callback recorded an end
    before = uploader_view(out, 2, run_running=False)
    assert before.verdict is Verdict.COMPLETE and before.version is not None
    files_before = stats(out / "checkpoint-2")

    resumed = drive(tmp_path, "none", "--sidecar", str(out), "4", "resume")
    assert resumed.code == 0, resumed.log[-3000:]
    assert resumed.begins == [2] and resumed.saves == [4]
    assert stats(out / "checkpoint-2") == files_before
    marker = read_marker(out, "checkpoint-2")
    assert marker is not None and marker.run_id == info.run_id
    assert marker.matches(out / "checkpoint-2")
    after = uploader_view(out, 2, run_running=True)
    assert after.verdict is Verdict.COMPLETE and after.version is not None
    assert after.version.version_key == before.version.version_key
    assert format_timestamp(after.version.timestamp) == format_timestamp(
        before.version.timestamp)
