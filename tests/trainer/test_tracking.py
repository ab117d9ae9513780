"""W&B (offline): the run uses the run info's project, group and id, and gets the final F1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.run_info import read_run_info
from trainer import train
from trainer.settings import TrainerSettings
from trainer.tracking import log_metrics


@pytest.mark.slow
def test_f1_reaches_the_wandb_run_of_this_run_id(
    small_settings: Callable[..., TrainerSettings], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    seen: list[dict[str, Any]] = []

    def spy(run: Any, metrics: dict[str, float], step: int) -> None:
        log_metrics(run, metrics, step)
        seen.append({"id": run.id, "project": run.project, "group": run.group, "step": step,
                     "summary": {k: run.summary[k] for k in metrics}})

    monkeypatch.setattr(train, "log_metrics", spy)
    settings = small_settings(report_to="wandb", max_steps=2, wandb_project="ner-test")
    result = train.run(settings)
    info = read_run_info(settings.output_dir)
    assert info is not None and result.f1 is not None
    assert len(seen) == 1
    assert (seen[0]["id"], seen[0]["project"], seen[0]["group"]) == (
        info.wandb_run_id, "ner-test", info.run_id)
    assert seen[0]["step"] == 2
    assert seen[0]["summary"]["eval_entity_f1"] == result.f1.overall.f1
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{info.wandb_run_id}"))
