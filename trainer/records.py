"""NER records in the trainer's one internal shape, and the conversion from what datasets hold.

Two record shapes are accepted:

- instruction records: `{"text": "...", "entities": [{"text": "...", "type": "..."}, ...]}`
  (what `trainer.synthetic` writes; extra keys such as offsets are ignored);
- token/BIO records as in the common medical NER corpora (NCBI-disease, BC5CDR, ...):
  `{"tokens": [...], "ner_tags": [...]}` (or `tags`) with string tags (`B-Disease`, `I-Disease`,
  `O`; BIOES `E-`/`S-` too) or integer tags plus the label names (from the dataset's
  `ClassLabel` feature or --ner-labels). Tokens are joined with single spaces, so every entity
  is a substring of the sentence.

A CSV cell cannot hold a list: there, list-valued columns are JSON strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainer.errors import DatasetError

TOKENS = "tokens"
TAG_COLUMNS = ("ner_tags", "tags")
TEXT, ENTITIES = "text", "entities"


@dataclass(frozen=True)
class Entity:
    text: str
    type: str


@dataclass(frozen=True)
class NerExample:
    text: str
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class NerData:
    train: list[NerExample]
    validation: list[NerExample]

    @property
    def entity_types(self) -> list[str]:
        return sorted({e.type for ex in self.train for e in ex.entities})


def _tag_name(tag: object, label_names: Sequence[str] | None, where: str) -> str:
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int) and not isinstance(tag, bool):
        if not label_names:
            raise DatasetError(
                f"{where}: integer ner_tags need the label names: a ClassLabel feature in the "
                "dataset, or --ner-labels (TRAINER_NER_LABELS), e.g. O,B-Disease,I-Disease"
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


def _list_value(value: object, column: str, where: str) -> list:
    """A list column; a JSON string (CSV) is decoded."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DatasetError(f"{where}: {column} is neither a list nor a JSON list") from None
    if not isinstance(value, list | tuple):
        raise DatasetError(f"{where}: {column} must be a list, not {type(value).__name__}")
    return list(value)


def tag_column(columns: Sequence[str]) -> str | None:
    return next((c for c in TAG_COLUMNS if c in columns), None)


def parse_record(
    record: object, label_names: Sequence[str] | None = None, where: str = "record"
) -> NerExample:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected a record (JSON object), not {type(record).__name__}")
    tags = tag_column(list(record))
    if TOKENS in record and tags is not None:
        return from_bio(_list_value(record[TOKENS], TOKENS, where),
                        _list_value(record[tags], tags, where), label_names, where)
    if TEXT in record and ENTITIES in record:
        try:
            entities = tuple(Entity(str(e["text"]), str(e["type"]).upper())
                             for e in _list_value(record[ENTITIES], ENTITIES, where))
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: each entity needs 'text' and 'type' ({exc})") from None
        return NerExample(str(record[TEXT]), entities)
    raise DatasetError(
        f"{where}: expected 'text' and 'entities', or 'tokens' and 'ner_tags'; "
        f"found keys {sorted(record)}"
    )
