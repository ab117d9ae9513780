"""The tiny base model is deterministic: a resumed run rebuilds exactly the model it started on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.tiny import TinySpec, ensure_tiny_model

CORPUS = ["Patient with asthma was started on albuterol 2 puffs as needed.",
          '[{"text": "asthma", "type": "DISEASE"}]'] * 20
SPEC = TinySpec(vocab_size=300)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_builds_are_byte_identical_and_loadable(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path / "a", CORPUS, SPEC)
    second = ensure_tiny_model(tmp_path / "b", CORPUS, SPEC)
    assert first.name == second.name and first.name.startswith(".tiny-base-")
    assert _files(first) == _files(second)
    assert ensure_tiny_model(tmp_path / "a", CORPUS, SPEC) == first  # reused, not rebuilt
    assert ensure_tiny_model(tmp_path / "a", CORPUS[:1], SPEC) != first  # other data, other model
    tokenizer = AutoTokenizer.from_pretrained(first)
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.config.vocab_size == len(tokenizer) <= SPEC.vocab_size
    assert tokenizer.chat_template and tokenizer.pad_token_id is not None
    assert not [p.name for p in first.parent.iterdir() if p.name.startswith(".tiny-build-")]


def test_shipped_base_matches_its_recipe() -> None:
    from trainer.dataset import load_packaged
    from trainer.tiny_base import (
        RECIPE_FILENAME,
        PretrainSpec,
        packaged_tiny_base,
        recipe,
        tiny_base_folder,
    )

    folder = tiny_base_folder()
    assert folder is not None, "trainer/data/tiny-base is missing: python -m trainer.tiny_base"
    shipped = json.loads((folder / RECIPE_FILENAME).read_text())
    expected = recipe(load_packaged().train, TinySpec(), PretrainSpec())
    assert shipped["fingerprint"] == expected["fingerprint"], (
        "the corpus, TinySpec or PretrainSpec changed: python -m trainer.tiny_base")
    assert folder == packaged_tiny_base()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.vocab_size == len(tokenizer) and tokenizer.chat_template


def test_pretraining_build_is_deterministic(tmp_path: Path) -> None:
    from trainer.dataset import load_packaged
    from trainer.tiny_base import PretrainSpec, build

    examples = load_packaged(max_train=32).train
    recipe_a = build(tmp_path / "a", examples, SPEC, PretrainSpec(steps=3, batch_size=4))
    recipe_b = build(tmp_path / "b", examples, SPEC, PretrainSpec(steps=3, batch_size=4))
    assert recipe_a == recipe_b and _files(tmp_path / "a") == _files(tmp_path / "b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny-base-build-")]


def test_without_the_shipped_base_tiny_falls_back_to_a_random_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An install whose package data lacks trainer/data/tiny-base (e.g. a wheel) still runs.
    from trainer import tiny_base, train
    from trainer.dataset import load_packaged
    from trainer.settings import TrainerSettings

    monkeypatch.setattr(tiny_base, "packaged_tiny_base", lambda: tmp_path / "absent")
    settings = TrainerSettings(base_model="tiny", output_dir=tmp_path / "out")
    source = train._tiny_source(settings, load_packaged(max_train=16))
    assert source.parent == settings.output_dir and source.name.startswith(".tiny-base-")
    assert (source / "config.json").is_file()
