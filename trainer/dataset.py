"""Where the training data comes from, read into `NerData` (see `trainer.records` for the record
shapes).

- no --dataset: the synthetic JSONL shipped in trainer/data, read line by line (no `datasets`
  import, so the demo and the tests stay fast);
- a data file (with --validation-file): `datasets.load_dataset(<parquet|json|csv|arrow>, ...)`;
- a local folder: `datasets.load_dataset(folder)`, so any layout it understands works: parquet,
  JSON, JSONL or CSV files, split names from file or folder names (train, validation, test,
  ...), configurations from the folder's README.md;
- a Hub dataset id: its data files and card are downloaded with the run's endpoint and token,
  then read as a local folder (so --hf-endpoint holds for data too).

Integer tags take their label names from the dataset's `ClassLabel` feature, or --ner-labels.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trainer.errors import DatasetError
from trainer.records import NerData, NerExample, parse_record, tag_column
from trainer.synthetic import TRAIN_FILENAME, VALIDATION_FILENAME

log = logging.getLogger(__name__)

VALIDATION_NAMES = ("validation", "valid", "val", "dev", "test")
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv",
            ".arrow": "arrow"}
HUB_ID_RE = re.compile(r"[\w.-]+/[\w.-]+")
# What a dataset repo's snapshot needs for `load_dataset`: the data files and the card (its
# YAML names the configurations and their files).
HUB_PATTERNS = ["README.md", *(f"*{suffix}" for suffix in BUILDERS)]


@dataclass(frozen=True)
class DataSource:
    """The --dataset settings."""

    dataset: str | None = None
    config: str | None = None
    train_split: str = "train"
    validation_split: str | None = None
    validation_file: Path | None = None


def packaged_data_dir() -> Path:
    return Path(str(resources.files("trainer") / "data"))


def load_jsonl(path: Path, label_names: Sequence[str] | None = None) -> list[NerExample]:
    examples: list[NerExample] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not JSON ({exc.msg})") from None
        examples.append(parse_record(record, label_names, where))
    if not examples:
        raise DatasetError(f"{path} holds no records")
    return examples


def download_hub_dataset(
    repo_id: str, *, token: str | None, endpoint: str, cache_dir: Path | None = None
) -> Path:
    """Fetch a Hub dataset repo's data files and card; the only network access of loading."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    log.info("downloading dataset", extra={"repo_id": repo_id})
    try:
        return Path(api.snapshot_download(repo_id, repo_type="dataset", cache_dir=cache_dir,
                                          allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise DatasetError(f"--dataset {repo_id}: cannot download it from {endpoint}: "
                           f"{_first_line(exc)}",
                           hint="check the id, and HF_TOKEN for a private or gated "
                           "dataset") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DatasetError("--dataset needs the datasets package, which is not installed",
                           hint="pip install 'checkpoint-sidecar[trainer]' (or datasets)") from None
    return datasets


def _builder(path: Path) -> str:
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DatasetError(f"--dataset {path}: unknown file type; use one of "
                           f"{', '.join(sorted(BUILDERS))}")
    return builder


def _read(source: DataSource, cache_dir: Path | None, path: str, **kwargs: Any) -> Any:
    datasets = _datasets()
    try:
        return datasets.load_dataset(path, cache_dir=str(cache_dir) if cache_dir else None,
                                     **kwargs)
    except Exception as exc:
        raise DatasetError(f"--dataset {source.dataset}: cannot read it: {_first_line(exc)}",
                           hint="a folder or file of parquet, JSON, JSONL or CSV; "
                           "--dataset-config for a dataset with several configurations") from None


def _load_splits(source: DataSource, folder: str | None, cache_dir: Path | None) -> Any:
    """A DatasetDict: the folder's splits, or the data file and --validation-file (each read
    with the builder its suffix names, so the two may differ in format)."""
    datasets = _datasets()

    if folder is not None:
        loaded = _read(source, cache_dir, folder, name=source.config)
        if not isinstance(loaded, datasets.DatasetDict):
            raise DatasetError(f"--dataset {source.dataset}: expected named splits")
        return loaded
    assert source.dataset is not None and source.validation_file is not None
    files = {source.train_split: Path(source.dataset),
             source.validation_split or VALIDATION_NAMES[0]: source.validation_file}
    return datasets.DatasetDict({
        split: _read(source, cache_dir, _builder(path), data_files=str(path), split="train")
        for split, path in files.items()})


def _pick(splits: Any, source: DataSource) -> tuple[str, str]:
    names = list(splits)
    if source.train_split not in names:
        raise DatasetError(f"--train-split {source.train_split}: no such split in "
                           f"{source.dataset} (it has {', '.join(names)})")
    if source.validation_split is not None:
        if source.validation_split not in names:
            raise DatasetError(f"--validation-split {source.validation_split}: no such split "
                               f"in {source.dataset} (it has {', '.join(names)})")
        return source.train_split, source.validation_split
    for name in VALIDATION_NAMES:
        if name in names and name != source.train_split:
            return source.train_split, name
    raise DatasetError(f"{source.dataset} has no validation split (it has {', '.join(names)})",
                       hint="--validation-split NAME, or --validation-file for a single file")


def class_label_names(features: Any) -> list[str] | None:
    """The label names of the tag column's `ClassLabel`, if the dataset declares one."""
    from datasets import ClassLabel

    column = tag_column(list(features))
    feature = getattr(features[column], "feature", None) if column else None
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _examples(split: Any, name: str, label_names: Sequence[str] | None,
              limit: int | None) -> list[NerExample]:
    if limit is not None:
        split = split.select(range(min(limit, len(split))))
    if len(split) == 0:
        raise DatasetError(f"split {name} holds no records")
    names = label_names or class_label_names(split.features)
    return [parse_record(row, names, f"{name}[{index}]") for index, row in enumerate(split)]


def _folder(source: DataSource, *, token: str | None, endpoint: str,
            cache_dir: Path | None) -> str | None:
    """The folder to read (downloaded first for a Hub id), or None for a single data file."""
    assert source.dataset is not None
    path = Path(source.dataset)
    if path.is_dir():
        return str(path)
    if path.is_file():
        _builder(path)
        if source.validation_file is None:
            raise DatasetError(
                f"--dataset {path} is a single file; set --validation-file "
                "(TRAINER_VALIDATION_FILE) or pass a folder with train and validation files")
        return None
    if path.suffix.lower() in BUILDERS or not HUB_ID_RE.fullmatch(source.dataset):
        raise DatasetError(f"--dataset {source.dataset}: no such file or folder, and not a Hub "
                           "dataset id (owner/name)")
    return str(download_hub_dataset(source.dataset, token=token, endpoint=endpoint,
                                    cache_dir=cache_dir))


def load_packaged(*, max_train: int | None = None, max_validation: int | None = None) -> NerData:
    folder = packaged_data_dir()
    return NerData(load_jsonl(folder / TRAIN_FILENAME)[:max_train],
                   load_jsonl(folder / VALIDATION_FILENAME)[:max_validation])


def load_data(
    source: DataSource,
    label_names: Sequence[str] | None = None,
    *,
    token: str | None = None,
    endpoint: str = "https://huggingface.co",
    cache_dir: Path | None = None,
    max_train: int | None = None,
    max_validation: int | None = None,
) -> NerData:
    """Train and validation examples from the source (downloading a Hub dataset first).

    `cache_dir` holds the Hub download and `datasets`' Arrow cache (default: the HF cache).
    """
    if source.dataset is None:
        data = load_packaged(max_train=max_train, max_validation=max_validation)
    else:
        folder = _folder(source, token=token, endpoint=endpoint, cache_dir=cache_dir)
        splits = _load_splits(source, folder, cache_dir)
        train_name, validation_name = _pick(splits, source)
        data = NerData(_examples(splits[train_name], train_name, label_names, max_train),
                       _examples(splits[validation_name], validation_name, label_names,
                                 max_validation))
    log.info("dataset loaded", extra={"train": len(data.train),
                                      "validation": len(data.validation),
                                      "dataset": source.dataset or "packaged",
                                      "entity_types": data.entity_types})
    return data
