"""Loading: instruction records, token/BIO records (string tags, integer tags + label list),
and where the files come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.dataset import (
    DataFiles,
    Entity,
    from_bio,
    load_data,
    load_jsonl,
    parse_record,
    resolve_files,
)
from trainer.errors import DatasetError

NCBI_LABELS = ["O", "B-Disease", "I-Disease"]


def test_bio_string_tags() -> None:
    ex = from_bio(
        ["Patient", "with", "type", "2", "diabetes", "takes", "metformin", "500", "mg", "."],
        ["O", "O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "O", "B-DRUG", "B-DOSAGE",
         "I-DOSAGE", "O"],
    )
    assert ex.text == "Patient with type 2 diabetes takes metformin 500 mg ."
    assert ex.entities == (Entity("type 2 diabetes", "DISEASE"), Entity("metformin", "DRUG"),
                           Entity("500 mg", "DOSAGE"))
    assert all(e.text in ex.text for e in ex.entities)


def test_bio_integer_tags_with_label_list() -> None:
    ex = from_bio(["Familial", "breast", "cancer", "and", "ataxia"], [0, 1, 2, 0, 1],
                  NCBI_LABELS)
    assert ex.entities == (Entity("breast cancer", "DISEASE"), Entity("ataxia", "DISEASE"))


def test_bio_edge_cases() -> None:
    # Two adjacent B- entities stay separate; an I- without an open entity starts one; a type
    # change inside I- tags starts a new entity; BIOES E-/S- close entities.
    ex = from_bio(["a", "b", "c", "d", "e", "f", "g"],
                  ["B-X", "B-X", "I-Y", "I-Z", "S-X", "B-Y", "E-Y"])
    assert ex.entities == (Entity("a", "X"), Entity("b", "X"), Entity("c", "Y"),
                           Entity("d", "Z"), Entity("e", "X"), Entity("f g", "Y"))


def test_bio_errors_name_the_fix() -> None:
    with pytest.raises(DatasetError, match="--ner-labels"):
        from_bio(["a"], [1])
    with pytest.raises(DatasetError, match="outside"):
        from_bio(["a"], [5], NCBI_LABELS)
    with pytest.raises(DatasetError, match="2 tokens but 1"):
        from_bio(["a", "b"], ["O"])


def test_instruction_record_ignores_offsets() -> None:
    ex = parse_record({"text": "fever", "entities": [
        {"text": "fever", "type": "symptom", "start": 0, "end": 5}]})
    assert ex.entities == (Entity("fever", "SYMPTOM"),)
    with pytest.raises(DatasetError, match="found keys"):
        parse_record({"sentence": "x"})


def test_mixed_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([
        json.dumps({"text": "Has fever.", "entities": [{"text": "fever", "type": "SYMPTOM"}]}),
        "",
        json.dumps({"tokens": ["Has", "asthma"], "ner_tags": [0, 1]}),
    ]))
    examples = load_jsonl(path, NCBI_LABELS)
    assert [e.entities for e in examples] == [(Entity("fever", "SYMPTOM"),),
                                              (Entity("asthma", "DISEASE"),)]
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match=r"data.jsonl:1: not JSON"):
        load_jsonl(path)


def test_resolve_files(tmp_path: Path) -> None:
    default = resolve_files(None, None, token=None, endpoint="unused")
    assert default.train.name == "train.jsonl" and default.validation.name == "validation.jsonl"
    (tmp_path / "train.jsonl").write_text('{"text": "a", "entities": []}\n')
    (tmp_path / "dev.jsonl").write_text('{"text": "b", "entities": []}\n')
    assert resolve_files(str(tmp_path), None, token=None, endpoint="x") == DataFiles(
        tmp_path / "train.jsonl", tmp_path / "dev.jsonl")
    with pytest.raises(DatasetError, match="--validation-file"):
        resolve_files(str(tmp_path / "train.jsonl"), None, token=None, endpoint="x")
    with pytest.raises(DatasetError, match="not a Hub id"):
        resolve_files(str(tmp_path / "missing.jsonl"), None, token=None, endpoint="x")
    data = load_data(DataFiles(tmp_path / "train.jsonl", tmp_path / "dev.jsonl"))
    assert len(data.train) == len(data.validation) == 1


@pytest.mark.slow
def test_hub_dataset_with_bio_records(tmp_path: Path) -> None:
    devhub_testing = pytest.importorskip("devhub.testing")
    from huggingface_hub import HfApi

    source = tmp_path / "source" / "data"
    source.mkdir(parents=True)
    (source / "train.jsonl").write_text(
        json.dumps({"tokens": ["Has", "breast", "cancer"], "ner_tags": [0, 1, 2]}) + "\n")
    (source / "validation.jsonl").write_text(
        json.dumps({"tokens": ["Has", "gout"], "ner_tags": [0, 1]}) + "\n")
    with devhub_testing.DevHub(tmp_path / "hub", users={"alice": "hf_alice"}) as hub:
        api = HfApi(endpoint=hub.url, token="hf_alice")
        api.create_repo("alice/ner-corpus", repo_type="dataset")
        api.upload_folder(repo_id="alice/ner-corpus", repo_type="dataset",
                          folder_path=source.parent)
        files = resolve_files("alice/ner-corpus", None, token="hf_alice", endpoint=hub.url,
                              cache_dir=tmp_path / "cache")
    data = load_data(files, NCBI_LABELS)
    assert data.train[0].entities == (Entity("breast cancer", "DISEASE"),)
    assert data.validation[0].entities == (Entity("gout", "DISEASE"),)
