"""Has the training run ended? From its run info, or, for any other trainer, from its checkpoints.

`watch --exit-when-done` and the pruner ask this. The rules, in order:

1. `run_info.json` exists (this project's trainer, or `trainer.sidecar.SidecarCallback` in the
   user's script): the run ended when it records an outcome; nothing else counts.
2. No run info (a plain `Trainer`, TRL's `SFTTrainer`, axolotl): the run ended when the newest
   `checkpoint-N/trainer_state.json` says `global_step == max_steps` (Trainer saves at the last
   step with a `steps` or `epoch` save strategy). The caller then waits `--run-end-grace`
   before it acts on that, since a script may still save or evaluate after its last
   checkpoint. A run without saves, or one that crashes, leaves no such evidence: the uploader
   keeps watching (stop it, or use `backfill`).

A file being written may read as torn JSON; that reads as "not ended yet", and the next check
sees the finished file.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from shared.layout import TRAINER_STATE_FILENAME, Kind, list_folders
from shared.run_info import RunInfo, RunInfoError, read_run_info


class Evidence(enum.StrEnum):
    RUN_INFO = "run_info"  # the trainer recorded its outcome
    LAST_STEP = "last_step"  # the newest checkpoint is at max_steps (no run info)


@dataclass(frozen=True)
class RunEnd:
    evidence: Evidence
    outcome: str  # "completed" / "failed" from run info; "completed" for LAST_STEP
    detail: str  # what was seen, for the log line

    @property
    def needs_grace(self) -> bool:
        """Evidence read off a checkpoint is weaker than a recorded outcome: wait the grace."""
        return self.evidence is Evidence.LAST_STEP


def run_ended(output_dir: Path) -> RunEnd | None:
    """How we know the run in `output_dir` ended, or None while it may still be running."""
    try:
        info = read_run_info(output_dir)
    except RunInfoError:
        return None  # rule 1's file, torn or damaged: rule 2 must not overrule it
    if info is not None:
        return _from_run_info(info)
    return _from_last_checkpoint(output_dir)


def _from_run_info(info: RunInfo) -> RunEnd | None:
    if not info.ended:
        return None
    outcome = info.outcome.value if info.outcome else "completed"
    return RunEnd(Evidence.RUN_INFO, outcome, f"run_info.json outcome {outcome}")


def _from_last_checkpoint(output_dir: Path) -> RunEnd | None:
    checkpoints = [r for r in list_folders(output_dir) if r.kind is Kind.CHECKPOINT]
    if not checkpoints:
        return None
    newest = max(checkpoints, key=lambda r: r.step or 0)
    state = _trainer_state(output_dir / newest.name / TRAINER_STATE_FILENAME)
    if state is None:
        return None
    step, max_steps = state.get("global_step"), state.get("max_steps")
    if not (_count(step) and _count(max_steps)) or max_steps <= 0 or step < max_steps:
        return None
    return RunEnd(Evidence.LAST_STEP, "completed",
                  f"{newest.name}/{TRAINER_STATE_FILENAME}: global_step {step} == max_steps")


def _trainer_state(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or being written
    return data if isinstance(data, dict) else None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
