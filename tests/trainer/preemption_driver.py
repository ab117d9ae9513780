"""A training process preempted at a chosen point of one save (for test_preemption_window).

    python preemption_driver.py PROBE_FILE WHERE:STEP [trainer arguments ...]
    python preemption_driver.py PROBE_FILE WHERE:STEP --sidecar OUTPUT_DIR MAX_STEPS [resume]

The first runs `python -m trainer` (this project's trainer); the second a user's plain
`transformers.Trainer` script on the shipped tiny base with `SidecarCallback` added, saving every
2 steps, and `train(resume_from_checkpoint=True)` when `resume` is given.

WHERE is where SIGTERM arrives, in the save of STEP:
- `marker`: after `_save_checkpoint` wrote everything (`trainer_state.json` last) and rotated,
  when `CompletionMarkerCallback.on_save` begins, before the marker is written;
- `state`: while `trainer_state.json` is being written (half of it on disk);
- `before-state`: after the weights, optimizer and RNG state, before `trainer_state.json`;
- `none`: no preemption.

The signal goes to this process itself: in the project's trainer the real handler
(`trainer.train.sigterm_raises`) turns it into `Terminated` and the run info records the run
failed; the user script has no handler, so the process dies of it, as a real preemption would.
Each train begin (with the step it starts from) and each save reaching the marker callback is
appended to PROBE_FILE as a JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerState

from trainer.callbacks import CompletionMarkerCallback


def probe(path: Path, **row: object) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def preempt() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the signal ends this (or raises Terminated) right away; never reached
    raise AssertionError("SIGTERM did not stop the run")


def install(probe_file: Path, where: str, step: int) -> None:
    on_save = CompletionMarkerCallback.on_save
    save_to_json = TrainerState.save_to_json

    def on_train_begin(self, args, state, control, **kwargs):
        probe(probe_file, event="begin", step=state.global_step)

    def on_save_preempted(self, args, state, control, **kwargs):
        probe(probe_file, event="save", step=state.global_step)
        if where == "marker" and state.global_step == step:
            preempt()
        return on_save(self, args, state, control, **kwargs)

    def save_to_json_preempted(self, json_path):
        if self.global_step == step and where == "before-state":
            preempt()
        if self.global_step == step and where == "state":
            save_to_json(self, json_path)
            with open(json_path, "r+", encoding="utf-8") as fh:
                fh.truncate(len(fh.read()) // 2)
            preempt()
        return save_to_json(self, json_path)

    CompletionMarkerCallback.on_train_begin = on_train_begin
    CompletionMarkerCallback.on_save = on_save_preempted
    TrainerState.save_to_json = save_to_json_preempted


def user_script(probe_file: Path, output_dir: str, max_steps: int, resume: bool) -> int:
    """A plain Trainer on the shipped tiny base (a full model, no LoRA), with the sidecar."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from trainer.sidecar import SidecarCallback
    from trainer.tiny_base import tiny_base_folder

    torch.set_num_threads(1)
    base = tiny_base_folder()
    assert base is not None, "trainer/data/tiny-base is missing"
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    ids = tokenizer("Patient was diagnosed with diabetes.")["input_ids"]
    data = Dataset.from_list([{"input_ids": ids, "labels": ids}] * 16)
    args = TrainingArguments(output_dir=output_dir, max_steps=max_steps, save_steps=2,
                             save_strategy="steps", logging_steps=100, report_to="none",
                             per_device_train_batch_size=2, use_cpu=True,
                             dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.add_callback(SidecarCallback())  # the sidecar's line

    class BeginProbe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            probe(probe_file, event="begin", step=state.global_step)

    trainer.add_callback(BeginProbe())
    trainer.train(resume_from_checkpoint=True if resume else None)
    return 0


if __name__ == "__main__":
    where, _, at = sys.argv[2].partition(":")
    install(Path(sys.argv[1]), where, int(at or 0))
    if sys.argv[3:4] == ["--sidecar"]:
        raise SystemExit(user_script(Path(sys.argv[1]), sys.argv[4], int(sys.argv[5]),
                                     sys.argv[6:7] == ["resume"]))
    from trainer.__main__ import main

    raise SystemExit(main(sys.argv[3:]))
