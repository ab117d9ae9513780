"""Trainer test helpers: one torch thread (the CI box has two cores, shared), small settings,
and a tiny base model built once per session and passed as a local model folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.settings import TrainerSettings

SMALL = dict(
    max_train_samples=64,
    max_eval_samples=8,
    per_device_train_batch_size=2,
    per_device_eval_batch_size=4,
    gradient_accumulation_steps=1,
    max_steps=6,
    save_steps=2,
    eval_steps=2,
    logging_steps=2,
    f1_max_samples=4,
    f1_max_new_tokens=8,
    max_seq_length=160,
)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama folder for the first 64 training records (what SMALL trains on)."""
    from trainer import dataset, prompts
    from trainer.tiny import ensure_tiny_model

    data = dataset.load_packaged(max_train=SMALL["max_train_samples"])
    corpus = prompts.tokenizer_corpus(data.train, data.entity_types)
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny"), corpus)


@pytest.fixture
def small_settings(tmp_path: Path, tiny_model_dir: Path) -> Callable[..., TrainerSettings]:
    """Settings for a 6-step run on the session's tiny model; keyword arguments override."""

    def make(**overrides: Any) -> TrainerSettings:
        values: dict[str, Any] = {**SMALL, "base_model": str(tiny_model_dir),
                                  "output_dir": tmp_path / "out"}
        return TrainerSettings(**{**values, **overrides})

    return make
