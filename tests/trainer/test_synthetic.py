"""The synthetic generator: deterministic, exact labels, and the committed dataset is its output."""

from __future__ import annotations

import json
from pathlib import Path

from trainer import synthetic
from trainer.dataset import load_jsonl, packaged_data_dir

REQUIRED_TYPES = {"DISEASE", "DRUG", "DOSAGE", "SYMPTOM", "PROCEDURE"}


def test_same_seed_same_sentences_other_seed_other_sentences() -> None:
    assert synthetic.generate(200, seed=7) == synthetic.generate(200, seed=7)
    assert synthetic.generate(200, seed=7) != synthetic.generate(200, seed=8)


def test_labels_are_exact_substrings_and_cover_the_types() -> None:
    sentences = synthetic.generate(500)
    assert len({s.text for s in sentences}) == 500
    seen = set()
    for sentence in sentences:
        for entity in sentence.entities:
            assert sentence.text[entity.start:entity.end] == entity.text
            seen.add(entity.type)
    assert seen >= REQUIRED_TYPES


def test_committed_dataset_is_the_generators_output(tmp_path: Path) -> None:
    paths = synthetic.write_splits(tmp_path, synthetic.TRAIN_SIZE, synthetic.VALIDATION_SIZE,
                                   synthetic.DEFAULT_SEED)
    committed = packaged_data_dir()
    for name in (synthetic.TRAIN_FILENAME, synthetic.VALIDATION_FILENAME):
        assert (committed / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"trainer/data/{name} is stale: run python -m trainer.synthetic --out trainer/data")
    assert len(load_jsonl(paths["train"])) == 2400
    assert len(load_jsonl(paths["validation"])) == 300
    train_texts = {json.loads(line)["text"] for line in paths["train"].open()}
    assert not any(json.loads(line)["text"] in train_texts for line in paths["validation"].open())


def test_cli_writes_both_files(tmp_path: Path) -> None:
    assert synthetic.main(["--out", str(tmp_path), "--train", "5", "--validation", "2"]) == 0
    assert len(load_jsonl(tmp_path / "train.jsonl")) == 5
    assert len(load_jsonl(tmp_path / "validation.jsonl")) == 2
