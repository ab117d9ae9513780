"""The checkpoint sidecar for your own training script (Trainer, TRL's SFTTrainer, ...): two lines.

    from trainer.sidecar import SidecarCallback
    trainer.add_callback(SidecarCallback())

It writes what this project's trainer writes, and nothing else: the run info
(`<output_dir>/run_info.json`: a run id kept across resumes, then the outcome) at the start and
end of `train()`, and a completion marker (`<output_dir>/.complete/checkpoint-N.json`) after
each save, from world rank 0 after a barrier (`trainer.callbacks.CompletionMarkerCallback`);
on resume, also the marker of the checkpoint resumed from when a preemption between its save and
its marker left it without one (`trainer.callbacks.mark_resumed_checkpoint`).
With it, `ckpt-uploader watch` uploads a checkpoint the moment its save finished (no settle
window) and `--exit-when-done` knows the run ended. Without it the uploader still works (see
`uploader.run_end`), just later and on weaker evidence.

Imports transformers and `shared` only: none of the demo trainer's settings, data or model. A
crash inside `train()` leaves the run "in progress" (no callback runs then); the outcome of a
run stopped early by a callback is recorded as failed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from shared.layout import checkpoint_name
from shared.run_info import Outcome, finish_run, read_run_info, start_run, write_run_info
from trainer.callbacks import (
    CompletionMarkerCallback,
    mark_resumed_checkpoint,
    wait_for_every_rank,
)

log = logging.getLogger(__name__)

__all__ = ["SidecarCallback"]


class SidecarCallback(TrainerCallback):
    """Run info and completion markers for `ckpt-uploader`, for any `transformers.Trainer`.

    `output_dir` defaults to `TrainingArguments.output_dir`; `base_model` to the model's
    `name_or_path`. A `train(resume_from_checkpoint=...)` keeps the run id of the run info
    already in the output dir; a fresh start gets a new one. `wandb_project`/`wandb_group`
    default to `WANDB_PROJECT`/`WANDB_RUN_GROUP` as W&B reads them.
    """

    def __init__(self, output_dir: str | Path | None = None, *, base_model: str | None = None,
                 wandb_project: str | None = None, wandb_group: str | None = None,
                 barrier: Callable[[], None] = wait_for_every_rank) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.base_model = base_model
        self.wandb_project = wandb_project
        self.wandb_group = wandb_group
        self.barrier = barrier
        self.run_id: str | None = None
        self._markers: CompletionMarkerCallback | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        out = self._out(args)
        run_id = ""  # only world rank 0 writes markers; the others only join the barrier
        if state.is_world_process_zero:
            # On resume Trainer has loaded the checkpoint's state before this callback runs.
            resumed = state.global_step > 0 and read_run_info(out) is not None
            wandb_run = _active_wandb_run()
            info = start_run(out, base_model=self.base_model or _model_name(kwargs.get("model")),
                             resume=resumed,
                             wandb_project=self.wandb_project or _attr(wandb_run, "project")
                             or _env("WANDB_PROJECT"),
                             wandb_group=self.wandb_group or _attr(wandb_run, "group")
                             or _env("WANDB_RUN_GROUP"))
            # The uploader writes its keys into the W&B run named here: only a real one (the
            # run transformers' WandbCallback started before us, or WANDB_RUN_ID), never the
            # id start_run invents for a run it would start itself.
            real_id = _attr(wandb_run, "id") or _env("WANDB_RUN_ID")
            if info.wandb_run_id != real_id:
                info = replace(info, wandb_run_id=real_id)
                write_run_info(out, info)
            run_id = self.run_id = info.run_id
            log.info("sidecar run info written", extra={"run_id": info.run_id,
                                                        "resumed": resumed, "output_dir": str(out)})
            if state.global_step > 0:
                # The checkpoint resumed from may be a finished save whose marker a preemption
                # cut off: it gets its marker now (nothing when it has one, or is not finished).
                mark_resumed_checkpoint(out, checkpoint_name(state.global_step), info.run_id)
        self._markers = CompletionMarkerCallback(out, run_id, barrier=self.barrier)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if self._markers is not None:
            self._markers.on_save(args, state, control, **kwargs)

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.run_id is None:
            return
        outcome = Outcome.COMPLETED if state.global_step >= state.max_steps else Outcome.FAILED
        finish_run(self._out(args), outcome)
        log.info("sidecar run finished", extra={"run_id": self.run_id, "outcome": outcome.value})

    def _out(self, args: TrainingArguments) -> Path:
        return self.output_dir if self.output_dir is not None else Path(args.output_dir)


def _model_name(model: Any) -> str:
    """The base model's id: PEFT keeps it in its config, a plain model in `name_or_path`."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict):
        for config in peft_config.values():
            name = getattr(config, "base_model_name_or_path", None)
            if name:
                return str(name)
    return str(getattr(model, "name_or_path", "") or "unknown")


def _active_wandb_run() -> Any:
    """The W&B run of this process, if the script (or WandbCallback) started one."""
    wandb = sys.modules.get("wandb")  # never imported here: W&B off must cost nothing
    return getattr(wandb, "run", None) if wandb is not None else None


def _attr(obj: Any, name: str) -> str | None:
    value = getattr(obj, name, None) if obj is not None else None
    return str(value) if value else None


def _env(name: str) -> str | None:
    return os.environ.get(name) or None
