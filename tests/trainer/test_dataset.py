"""Loading: record shapes (instruction, token/BIO with string or integer tags), and the formats
users have - parquet with a ClassLabel feature (NCBI-disease, BC5CDR), JSON, JSONL, CSV, a Hub
dataset - all built here with `datasets`, never downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.dataset import DataSource, class_label_names, load_data, load_jsonl, load_packaged
from trainer.errors import DatasetError
from trainer.records import Entity, from_bio, parse_record

datasets = pytest.importorskip("datasets")

NCBI_LABELS = ["O", "B-Disease", "I-Disease"]
# BC5CDR's order as its Hub copies declare it (chemicals and diseases interleaved).
BC5CDR_LABELS = ["O", "B-Chemical", "B-Disease", "I-Disease", "I-Chemical"]
NCBI_TRAIN = [
    {"id": "0", "tokens": ["Identification", "of", "APC2", ",", "a", "homologue", "of", "the",
                           "adenomatous", "polyposis", "coli", "tumour", "suppressor", "."],
     "ner_tags": [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 0, 0]},
    {"id": "1", "tokens": ["Familial", "breast", "cancer", "and", "ataxia", "."],
     "ner_tags": [0, 1, 2, 0, 1, 0]},
]
NCBI_VALIDATION = [{"id": "2", "tokens": ["Patients", "with", "gout", "."],
                    "ner_tags": [0, 0, 1, 0]}]
BC5CDR_TRAIN = [{"id": "0", "tokens": ["Naloxone", "reverses", "the", "hypotensive", "effect",
                                       "of", "clonidine", "."],
                 "ner_tags": [1, 0, 0, 2, 0, 0, 1, 0]}]
BC5CDR_VALIDATION = [{"id": "1", "tokens": ["Lidocaine", "-", "induced", "cardiac", "asystole"],
                      "ner_tags": [1, 0, 0, 2, 3]}]


def bio_features(labels: list[str]):  # -> datasets.Features
    return datasets.Features({
        "id": datasets.Value("string"),
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=labels)),
    })


def write_parquet(folder: Path, splits: dict[str, list[dict]], labels: list[str]) -> Path:
    """A folder laid out as the Hub's parquet conversion: data/<split>-00000-of-00001.parquet."""
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        ds = datasets.Dataset.from_list(rows, features=bio_features(labels))
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def load(source: DataSource, tmp_path: Path, **kwargs) -> object:
    return load_data(source, cache_dir=tmp_path / "cache", **kwargs)


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


def test_instruction_record_ignores_offsets_and_reads_json_cells() -> None:
    ex = parse_record({"text": "fever", "entities": [
        {"text": "fever", "type": "symptom", "start": 0, "end": 5}]})
    assert ex.entities == (Entity("fever", "SYMPTOM"),)
    csv_row = {"tokens": '["Has", "gout"]', "tags": '["O", "B-Disease"]'}
    assert parse_record(csv_row).entities == (Entity("gout", "DISEASE"),)
    with pytest.raises(DatasetError, match="found keys"):
        parse_record({"sentence": "x"})


def test_packaged_jsonl(tmp_path: Path) -> None:
    data = load_data(DataSource())
    assert (len(data.train), len(data.validation)) == (2400, 300)
    assert data.entity_types == ["DISEASE", "DOSAGE", "DRUG", "PROCEDURE", "SYMPTOM"]
    assert load_packaged(max_train=3, max_validation=2).train == data.train[:3]
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: not JSON"):
        load_jsonl(path)


@pytest.mark.parametrize(
    ("train", "validation", "labels", "expected_train", "expected_validation"),
    [
        (NCBI_TRAIN, NCBI_VALIDATION, NCBI_LABELS,
         [(Entity("adenomatous polyposis coli tumour", "DISEASE"),),
          (Entity("breast cancer", "DISEASE"), Entity("ataxia", "DISEASE"))],
         [(Entity("gout", "DISEASE"),)]),
        (BC5CDR_TRAIN, BC5CDR_VALIDATION, BC5CDR_LABELS,
         [(Entity("Naloxone", "CHEMICAL"), Entity("hypotensive", "DISEASE"),
           Entity("clonidine", "CHEMICAL"))],
         [(Entity("Lidocaine", "CHEMICAL"), Entity("cardiac asystole", "DISEASE"))]),
    ],
    ids=["ncbi-disease", "bc5cdr"],
)
def test_parquet_with_class_label(
    tmp_path: Path, train: list[dict], validation: list[dict], labels: list[str],
    expected_train: list[tuple[Entity, ...]], expected_validation: list[tuple[Entity, ...]],
) -> None:
    folder = write_parquet(tmp_path / "corpus", {"train": train, "validation": validation,
                                                 "test": validation}, labels)
    data = load(DataSource(str(folder)), tmp_path)  # label names from the ClassLabel feature
    assert [ex.entities for ex in data.train] == expected_train
    assert [ex.entities for ex in data.validation] == expected_validation
    ds = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert class_label_names(ds.features) == labels


def test_splits_by_name_and_their_errors(tmp_path: Path) -> None:
    folder = write_parquet(tmp_path / "corpus", {"train": NCBI_TRAIN, "test": NCBI_VALIDATION},
                           NCBI_LABELS)
    data = load(DataSource(str(folder)), tmp_path)  # no validation split: test is used
    assert data.validation[0].entities == (Entity("gout", "DISEASE"),)
    data = load(DataSource(str(folder), train_split="test", validation_split="train"), tmp_path,
                max_validation=1)
    assert len(data.train) == 1 and len(data.validation) == 1
    with pytest.raises(DatasetError, match=r"--validation-split dev: no such split .*train, test"):
        load(DataSource(str(folder), validation_split="dev"), tmp_path)
    with pytest.raises(DatasetError, match="--train-split"):
        load(DataSource(str(folder), train_split="training"), tmp_path)
    only_train = write_parquet(tmp_path / "only", {"train": NCBI_TRAIN}, NCBI_LABELS)
    with pytest.raises(DatasetError, match="no validation split") as info:
        load(DataSource(str(only_train)), tmp_path)
    assert "--validation-split" in (info.value.hint or "")


def test_json_csv_and_jsonl_files(tmp_path: Path) -> None:
    # String tags in JSON (one array), instruction records in CSV (entities as a JSON cell),
    # a JSONL folder mixing both shapes.
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps([{"tokens": ["Has", "asthma"],
                                      "ner_tags": ["O", "B-Disease"]}]))
    csv_file = tmp_path / "dev.csv"
    csv_file.write_text('text,entities\n"Took ibuprofen.","[{""text"": ""ibuprofen"", '
                        '""type"": ""drug""}]"\n')
    data = load(DataSource(str(json_file), validation_file=csv_file), tmp_path)
    assert data.train[0].entities == (Entity("asthma", "DISEASE"),)
    assert data.validation[0].entities == (Entity("ibuprofen", "DRUG"),)

    folder = tmp_path / "jsonl"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        json.dumps({"tokens": ["Has", "gout"], "ner_tags": [0, 1]}) + "\n")
    (folder / "validation.jsonl").write_text(
        json.dumps({"tokens": ["No", "fever"], "ner_tags": [0, 1]}) + "\n")
    data = load(DataSource(str(folder)), tmp_path, label_names=NCBI_LABELS)
    assert data.validation[0].entities == (Entity("fever", "DISEASE"),)
    with pytest.raises(DatasetError, match="--ner-labels"):  # integers without names
        load(DataSource(str(folder)), tmp_path)


def test_bad_sources_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a", "entities": []}\n')
    with pytest.raises(DatasetError, match="--validation-file"):
        load(DataSource(str(tmp_path / "train.jsonl")), tmp_path)
    with pytest.raises(DatasetError, match="not a Hub dataset id"):
        load(DataSource(str(tmp_path / "missing.parquet")), tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="unknown file type"):
        load(DataSource(str(tmp_path / "notes.txt"), validation_file=tmp_path / "notes.txt"),
             tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="cannot read it") as info:
        load(DataSource(str(empty)), tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_hub_dataset_in_parquet_with_a_config(tmp_path: Path) -> None:
    devhub_testing = pytest.importorskip("devhub.testing")
    from huggingface_hub import HfApi

    source = tmp_path / "source"
    write_parquet(source / "ncbi", {"train": NCBI_TRAIN, "validation": NCBI_VALIDATION},
                  NCBI_LABELS)
    write_parquet(source / "bc5cdr", {"train": BC5CDR_TRAIN, "validation": BC5CDR_VALIDATION},
                  BC5CDR_LABELS)
    # The card's YAML names the configurations, as on the Hub.
    (source / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: ncbi\n  data_files:\n  - split: train\n    path: ncbi/data/train-*\n"
        "  - split: validation\n    path: ncbi/data/validation-*\n"
        "- config_name: bc5cdr\n  data_files:\n  - split: train\n    path: bc5cdr/data/train-*\n"
        "  - split: validation\n    path: bc5cdr/data/validation-*\n---\n")
    with devhub_testing.DevHub(tmp_path / "hub", users={"alice": "hf_alice"}) as hub:
        api = HfApi(endpoint=hub.url, token="hf_alice")
        api.create_repo("alice/med-ner", repo_type="dataset")
        api.upload_folder(repo_id="alice/med-ner", repo_type="dataset", folder_path=source)
        data = load_data(DataSource("alice/med-ner", config="bc5cdr"), token="hf_alice",
                         endpoint=hub.url, cache_dir=tmp_path / "cache")
        with pytest.raises(DatasetError, match="cannot download"):
            load_data(DataSource("alice/missing"), token="hf_alice", endpoint=hub.url,
                      cache_dir=tmp_path / "cache")
    assert data.train[0].entities[0] == Entity("Naloxone", "CHEMICAL")
    assert data.validation[0].entities[1] == Entity("cardiac asystole", "DISEASE")


def test_a_run_trains_on_a_parquet_corpus(
    tmp_path: Path, small_settings, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # --dataset/--train-split/--validation-split reach the loader; the run trains on BC5CDR.
    from trainer import dataset as dataset_module
    from trainer.machine import Machine
    from trainer.train import run

    folder = write_parquet(tmp_path / "bc5cdr", {"train": BC5CDR_TRAIN * 4,
                                                 "dev": BC5CDR_VALIDATION}, BC5CDR_LABELS)
    seen: list[DataSource] = []
    real = dataset_module.load_data

    def recording(source: DataSource, *args: object, **kwargs: object) -> object:
        seen.append(source)
        return real(source, *args, **{**kwargs, "cache_dir": tmp_path / "cache"})

    monkeypatch.setattr(dataset_module, "load_data", recording)
    result = run(small_settings(dataset=str(folder), validation_split="dev", max_steps=2,
                                save_steps=2, eval_steps=2, f1_max_samples=1),
                 machine=Machine(cuda=False))
    assert seen == [DataSource(str(folder), None, "train", "dev", None)]
    assert result.global_step == 2 and result.f1 is not None and result.f1.samples == 1
