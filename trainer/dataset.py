"""Loading NER records: the instruction format, token/BIO corpora, local files or the Hub.

Two JSONL record shapes are accepted, line by line:

- instruction records: `{"text": "...", "entities": [{"text": "...", "type": "..."}, ...]}`
  (what `trainer.synthetic` writes; extra keys such as offsets are ignored);
- token/BIO records as in common medical NER corpora: `{"tokens": [...], "ner_tags": [...]}`
  with string tags (`B-DISEASE`, `I-DISEASE`, `O`; `E-`/`S-` too) or integer tags plus a label
  list. Tokens are joined with single spaces, so every entity is a substring of the sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from trainer.errors import DatasetError
from trainer.synthetic import TRAIN_FILENAME, VALIDATION_FILENAME

log = logging.getLogger(__name__)

VALIDATION_NAMES = ("validation", "valid", "val", "dev", "test")


@dataclass(frozen=True)
class Entity:
    text: str
    type: str


@dataclass(frozen=True)
class NerExample:
    text: str
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class DataFiles:
    train: Path
    validation: Path


@dataclass(frozen=True)
class NerData:
    train: list[NerExample]
    validation: list[NerExample]

    @property
    def entity_types(self) -> list[str]:
        return sorted({e.type for ex in self.train for e in ex.entities})


def packaged_data_dir() -> Path:
    return Path(str(resources.files("trainer") / "data"))


def _tag_name(tag: object, label_names: Sequence[str] | None, where: str) -> str:
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int) and not isinstance(tag, bool):
        if not label_names:
            raise DatasetError(
                f"{where}: integer ner_tags need the label names; set --ner-labels "
                "(TRAINER_NER_LABELS), e.g. O,B-Disease,I-Disease"
            )
        if not 0 <= tag < len(label_names):
            raise DatasetError(f"{where}: tag {tag} is outside the {len(label_names)} labels")
        return label_names[tag]
    raise DatasetError(f"{where}: a tag must be a string or an integer, not {tag!r}")


def from_bio(
    tokens: Sequence[str], tags: Sequence[object], label_names: Sequence[str] | None = None,
    where: str = "record",
) -> NerExample:
    """Convert one token/BIO record; an I- tag without a matching open entity starts one."""
    if len(tokens) != len(tags):
        raise DatasetError(f"{where}: {len(tokens)} tokens but {len(tags)} ner_tags")
    entities: list[Entity] = []
    current: list[str] = []
    current_type: str | None = None

    def close() -> None:
        nonlocal current, current_type
        if current_type is not None:
            entities.append(Entity(" ".join(current), current_type))
        current, current_type = [], None

    for token, raw in zip(tokens, tags, strict=True):
        tag = _tag_name(raw, label_names, where)
        prefix, _, kind = tag.partition("-")
        prefix, kind = prefix.upper(), kind.upper()
        if prefix == "O" or not kind:
            close()
            continue
        if prefix in ("B", "S") or kind != current_type:
            close()
        current.append(str(token))
        current_type = kind
        if prefix in ("E", "S"):
            close()
    close()
    return NerExample(" ".join(str(t) for t in tokens), tuple(entities))


def parse_record(
    record: object, label_names: Sequence[str] | None = None, where: str = "record"
) -> NerExample:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    if "tokens" in record and "ner_tags" in record:
        return from_bio(record["tokens"], record["ner_tags"], label_names, where)
    if "text" in record and "entities" in record:
        try:
            entities = tuple(Entity(str(e["text"]), str(e["type"]).upper())
                             for e in record["entities"])
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: each entity needs 'text' and 'type' ({exc})") from None
        return NerExample(str(record["text"]), entities)
    raise DatasetError(
        f"{where}: expected 'text' and 'entities', or 'tokens' and 'ner_tags'; "
        f"found keys {sorted(record)}"
    )


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


def _find(folder: Path, stems: Iterable[str]) -> Path | None:
    files = sorted(p for p in folder.rglob("*.jsonl")
                   if ".cache" not in p.relative_to(folder).parts)
    for stem in stems:
        for path in files:
            if path.stem == stem or path.stem.startswith(f"{stem}-") or path.stem.startswith(
                f"{stem}_"
            ):
                return path
    return None


def files_in_folder(folder: Path) -> DataFiles:
    """The train and validation JSONL files of a folder (also in subfolders, as on the Hub)."""
    train = _find(folder, ("train",))
    validation = _find(folder, VALIDATION_NAMES)
    if train is None or validation is None:
        raise DatasetError(
            f"{folder} needs {TRAIN_FILENAME} and {VALIDATION_FILENAME} (or valid/dev/test) "
            "JSONL files"
        )
    return DataFiles(train, validation)


def download_hub_dataset(
    repo_id: str, *, token: str | None, endpoint: str, cache_dir: Path | None = None
) -> Path:
    """Fetch the JSONL files of a Hub dataset repo; the only network access of data loading."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    log.info("downloading dataset", extra={"repo_id": repo_id})
    return Path(api.snapshot_download(repo_id, repo_type="dataset", cache_dir=cache_dir,
                                      allow_patterns=["*.jsonl", "**/*.jsonl"]))


def resolve_files(
    dataset: str | None, validation_file: Path | None, *, token: str | None, endpoint: str,
    cache_dir: Path | None = None,
) -> DataFiles:
    """The train and validation files: packaged, a local folder or file, or a Hub dataset id
    (downloaded into `cache_dir`, default the Hugging Face cache)."""
    if dataset is None:
        return files_in_folder(packaged_data_dir())
    path = Path(dataset)
    if path.is_dir():
        return files_in_folder(path)
    if path.is_file():
        if validation_file is None:
            raise DatasetError(
                f"--dataset {dataset} is a single file; set --validation-file "
                "(TRAINER_VALIDATION_FILE) or pass a folder with train and validation JSONL"
            )
        return DataFiles(path, validation_file)
    if path.suffix == ".jsonl" or dataset.count("/") != 1:
        raise DatasetError(f"--dataset {dataset}: no such file or folder, and not a Hub id")
    return files_in_folder(download_hub_dataset(dataset, token=token, endpoint=endpoint,
                                                cache_dir=cache_dir))


def load_data(
    files: DataFiles,
    label_names: Sequence[str] | None = None,
    *,
    max_train: int | None = None,
    max_validation: int | None = None,
) -> NerData:
    train = load_jsonl(files.train, label_names)[:max_train]
    validation = load_jsonl(files.validation, label_names)[:max_validation]
    log.info("dataset loaded", extra={"train": len(train), "validation": len(validation),
                                      "train_file": str(files.train)})
    return NerData(train, validation)
