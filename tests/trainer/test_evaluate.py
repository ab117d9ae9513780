"""Entity-level precision/recall/F1 on hand-made predictions, malformed answers included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.evaluate import parse_answer, score, write_results
from trainer.records import Entity

GOLD = [
    (Entity("asthma", "DISEASE"), Entity("albuterol", "DRUG")),
    (Entity("fever", "SYMPTOM"),),
    (Entity("metformin", "DRUG"), Entity("500 mg twice daily", "DOSAGE")),
    (),
]


def _answer(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"text": t, "type": k} for t, k in pairs])


def test_perfect_answers_score_one() -> None:
    answers = [_answer(*((e.text, e.type) for e in gold)) for gold in GOLD]
    results = score(GOLD, answers)
    assert (results.overall.precision, results.overall.recall, results.overall.f1) == (1, 1, 1)
    assert results.malformed == 0 and results.overall.gold == 5


def test_mixed_answers_including_malformed_json() -> None:
    answers = [
        _answer(("Asthma ", "disease"), ("albuterol", "SYMPTOM")),  # 1 hit (case/space), 1 wrong type
        '[{"text": "fever", "type": "SYMPTOM"',                      # malformed: truncated JSON
        'Entities: [{"text": "metformin", "type": "DRUG"}] done',     # text around the list
        _answer(("cough", "SYMPTOM")),                                # false positive
    ]
    results = score(GOLD, answers)
    assert results.malformed == 1
    assert results.overall.true_positives == 2
    assert results.overall.predicted == 4
    assert results.overall.gold == 5
    assert results.overall.precision == pytest.approx(2 / 4)
    assert results.overall.recall == pytest.approx(2 / 5)
    assert results.overall.f1 == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert results.per_type["DRUG"].true_positives == 1
    assert results.per_type["DOSAGE"].recall == 0
    assert results.per_type["SYMPTOM"].predicted == 2


@pytest.mark.parametrize("answer", ["", "no entities", "{}", '{"text": "a"}', "[1, 2", "null"])
def test_malformed_answers_predict_nothing(answer: str) -> None:
    results = score([(Entity("a", "X"),)], [answer])
    assert results.malformed == 1 and results.overall.predicted == 0
    assert results.overall.f1 == 0


def test_parse_skips_bad_items_and_counts_duplicates() -> None:
    assert parse_answer('[{"text": "a", "type": "X"}, {"text": 1, "type": "X"}, "b", {}]') == [
        Entity("a", "X")]
    assert parse_answer("[]") == []
    results = score([(Entity("a", "X"),)], [_answer(("a", "X"), ("a", "X"))])
    assert results.overall.true_positives == 1 and results.overall.predicted == 2


def test_empty_gold_and_empty_answer_is_not_an_error() -> None:
    results = score([()], ["[]"])
    assert results.overall.f1 == 0 and results.malformed == 0
    with pytest.raises(ValueError, match="answers"):
        score([()], [])


def test_results_file(tmp_path: Path) -> None:
    results = score(GOLD[:1], [_answer(("asthma", "DISEASE"))])
    path = write_results(tmp_path, results, {"step": 7})
    data = json.loads(path.read_text())
    assert path.name == "eval_results.json"
    assert data["step"] == 7 and data["precision"] == 1 and data["recall"] == 0.5
    assert data["per_type"]["DISEASE"]["f1"] == 1
    assert results.metrics()["eval_entity_f1"] == pytest.approx(2 / 3)
