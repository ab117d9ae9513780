"""Trainer callbacks: the completion marker after each save, and a schedule-preserving stop.

`on_save` fires on every rank once `_save_checkpoint` has returned, i.e. after the optimizer,
RNG states, `trainer_state.json` and rotation; rank 1 may get there before rank 0 has finished.
So every rank waits at a barrier, and only world rank 0 then writes the marker (atomically, in
`<output_dir>/.complete/`, outside the folder) and drops markers of rotated-away folders.

A preemption between `trainer_state.json` and the marker leaves a finished save unmarked; the
checkpoint a run resumes from gets its marker then (`mark_resumed_checkpoint`), dated when the
save finished, so the uploader sees one version of that step under one repo id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from shared.completion import Unfinished, finished_save
from shared.layout import TRAINER_STATE_FILENAME, checkpoint_name, classify
from shared.markers import (
    Marker,
    MarkerError,
    build_marker,
    read_marker,
    remove_orphan_markers,
    write_marker,
)

log = logging.getLogger(__name__)


def wait_for_every_rank() -> None:
    """Barrier across all processes (a no-op in a single process)."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def mark_resumed_checkpoint(output_dir: Path, folder: str, run_id: str) -> Marker | None:
    """Write the marker of the checkpoint a run resumes from when it has none; the marker.

    Only for a finished save (`shared.completion`): a folder already marked (or with a marker
    that cannot be read) or not finished is left alone (None). The marker is dated by
    `trainer_state.json`'s mtime, the time the uploader's settle rules name the repo by, so the
    uploader keeps one record and one repo id for it whether it saw the folder before or after.
    Call before training continues, from world rank 0 only.
    """
    output_dir = Path(output_dir)
    ref = classify(folder)
    path = output_dir / folder
    if ref is None or ref.step is None or not path.is_dir():
        return None
    try:
        if read_marker(output_dir, folder) is not None:
            return None
    except MarkerError:
        return None
    try:
        step = finished_save(path, ref)
    except Unfinished as exc:
        log.warning("resumed checkpoint is not a finished save; not marking it",
                    extra={"folder": folder, "reason": exc.reason})
        return None
    saved_at = datetime.fromtimestamp((path / TRAINER_STATE_FILENAME).stat().st_mtime, UTC)
    marker = build_marker(output_dir, folder, run_id=run_id, step=step, now=saved_at)
    write_marker(output_dir, marker)
    log.info("completion marker written for the resumed checkpoint (saved completely, but "
             "preempted before its marker)", extra={"folder": folder, "step": step,
                                                    "files": len(marker.files)})
    return marker


class CompletionMarkerCallback(TrainerCallback):
    """Writes the `shared.markers` completion marker for each checkpoint Trainer saves."""

    def __init__(
        self, output_dir: Path, run_id: str, barrier: Callable[[], None] = wait_for_every_rank
    ) -> None:
        self.output_dir = Path(output_dir)
        self.run_id = run_id
        self.barrier = barrier

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        self.barrier()
        if not state.is_world_process_zero:
            return
        folder = checkpoint_name(state.global_step)
        if not (self.output_dir / folder).is_dir():
            # Rotation with save_total_limit and a best checkpoint can delete the folder just
            # saved; there is nothing complete to mark.
            log.warning("saved checkpoint is gone before its marker", extra={"folder": folder})
        else:
            marker = build_marker(self.output_dir, folder, run_id=self.run_id,
                                  step=state.global_step)
            path = write_marker(self.output_dir, marker)
            log.info("completion marker written",
                     extra={"folder": folder, "step": state.global_step, "marker": str(path),
                            "files": len(marker.files)})
        removed = remove_orphan_markers(self.output_dir)
        if removed:
            log.info("orphan markers removed", extra={"folders": removed})


class StopAfterStepCallback(TrainerCallback):
    """Stops training after `step` as a preemption would: the LR schedule stays the full run's.

    Setting `should_training_stop` in `on_step_end` still lets this step's log, evaluation and
    save happen (they run right after), then the loop ends.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control
