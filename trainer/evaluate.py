"""Entity-level precision, recall and F1 of generated JSON answers.

An entity counts as found when the prediction holds the same (text, type) pair, compared after
trimming, collapsing whitespace and casefolding; duplicates count once per occurrence on each
side. An answer that is not a JSON list of entities predicts nothing (all its gold entities are
misses) and is counted in `malformed`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.fsutil import atomic_write_json
from trainer.records import Entity

log = logging.getLogger(__name__)

EVAL_RESULTS_FILENAME = "eval_results.json"
_LIST_RE = re.compile(r"\[.*\]", re.DOTALL)
_SPACE_RE = re.compile(r"\s+")

Key = tuple[str, str]


def parse_answer(answer: str) -> list[Entity] | None:
    """The entities of a generated answer; None when it is not a JSON list of entities.

    Text around the outermost brackets is ignored (a model may add a preamble or stop late);
    items that are not `{"text": str, "type": str}` objects are skipped.
    """
    match = _LIST_RE.search(answer)
    if match is None:
        return None
    try:
        items = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(items, list):
        return None
    return [
        Entity(item["text"], item["type"])
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("text"), str)
        and isinstance(item.get("type"), str)
    ]


def entity_key(entity: Entity) -> Key:
    return (_SPACE_RE.sub(" ", entity.text).strip().casefold(), entity.type.strip().upper())


@dataclass
class Counts:
    true_positives: int = 0
    predicted: int = 0
    gold: int = 0

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                **asdict(self)}


@dataclass
class F1Results:
    overall: Counts = field(default_factory=Counts)
    per_type: dict[str, Counts] = field(default_factory=dict)
    samples: int = 0
    malformed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.overall.to_json(),
            "samples": self.samples,
            "malformed": self.malformed,
            "per_type": {k: v.to_json() for k, v in sorted(self.per_type.items())},
        }

    def metrics(self, prefix: str = "eval_entity_") -> dict[str, float]:
        """Flat numbers for W&B and logs."""
        return {f"{prefix}precision": self.overall.precision,
                f"{prefix}recall": self.overall.recall, f"{prefix}f1": self.overall.f1,
                f"{prefix}malformed": float(self.malformed)}


def _add(results: F1Results, gold: Counter[Key], predicted: Counter[Key]) -> None:
    for key in gold | predicted:
        per_type = results.per_type.setdefault(key[1], Counts())
        hits = min(gold[key], predicted[key])
        for counts in (results.overall, per_type):
            counts.true_positives += hits
            counts.gold += gold[key]
            counts.predicted += predicted[key]


def score(gold: Sequence[Sequence[Entity]], answers: Sequence[str]) -> F1Results:
    """Micro-averaged entity-level scores of generated answers against gold entities."""
    if len(gold) != len(answers):
        raise ValueError(f"{len(gold)} gold records but {len(answers)} answers")
    results = F1Results(samples=len(gold))
    for gold_entities, answer in zip(gold, answers, strict=True):
        parsed = parse_answer(answer)
        if parsed is None:
            results.malformed += 1
            parsed = []
        _add(results, Counter(map(entity_key, gold_entities)), Counter(map(entity_key, parsed)))
    return results


def write_results(folder: Path, results: F1Results, extra: dict[str, Any]) -> Path:
    path = Path(folder) / EVAL_RESULTS_FILENAME
    atomic_write_json(path, {**results.to_json(), **extra})
    return path
