"""`SidecarCallback` beside transformers' own W&B integration (README, "Your own training
script"): with `report_to="wandb"`, the run info names the W&B run that `WandbCallback` started,
so the uploader can write its checkpoint keys into that run.

A plain `Trainer` on the shipped tiny base, one step, W&B offline: the script itself never calls
`wandb.init`; the id in `run_info.json` must be the id of the run W&B wrote to disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.run_info import read_run_info

pytestmark = pytest.mark.slow


def test_run_info_names_the_wandb_run_that_wandbcallback_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import wandb
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.integrations import WandbCallback

    from trainer.sidecar import SidecarCallback
    from trainer.tiny_base import tiny_base_folder

    for name in ("WANDB_RUN_ID", "WANDB_RUN_GROUP", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)  # only the run WandbCallback starts counts
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "sidecar-wandb-test")
    torch.set_num_threads(1)
    assert wandb.run is None, "a W&B run left over from another test"

    base = tiny_base_folder()
    assert base is not None, "trainer/data/tiny-base is missing"
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    ids = tokenizer("Patient was diagnosed with diabetes.")["input_ids"]
    data = Dataset.from_list([{"input_ids": ids, "labels": ids}] * 4)
    out = tmp_path / "out"
    args = TrainingArguments(output_dir=str(out), max_steps=1, save_steps=1,
                             save_strategy="steps", logging_steps=100, report_to="wandb",
                             per_device_train_batch_size=2, use_cpu=True,
                             dataloader_num_workers=0)
    seen: dict[str, Any] = {}

    class RunProbe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["id"] = wandb.run.id if wandb.run is not None else None
            seen["project"] = wandb.run.project if wandb.run is not None else None

    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.add_callback(SidecarCallback())  # the sidecar's line, as the README has it
    trainer.add_callback(RunProbe())
    assert any(isinstance(c, WandbCallback) for c in trainer.callback_handler.callbacks)
    try:
        trainer.train()
    finally:
        if wandb.run is not None:
            wandb.finish()
        # W&B keeps its settings (WANDB_DIR among them) in a process-wide singleton: a later
        # test in this worker would write its run under our tmp_path otherwise.
        wandb.teardown()

    assert seen.get("id"), "WandbCallback started no W&B run"
    info = read_run_info(out)
    assert info is not None and info.ended
    assert info.wandb_run_id == seen["id"]
    assert info.wandb_project == seen["project"] == "sidecar-wandb-test"
    # The id is the run W&B itself recorded (offline-run-<time>-<id>), not one made up for it.
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{info.wandb_run_id}")), sorted(
        p.name for p in (tmp_path / "wandb").iterdir())
