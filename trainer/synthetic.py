"""A deterministic generator of synthetic clinical sentences with exact entity labels.

Each record is one sentence and its entities with character offsets, so every label is exactly
the substring it names. The committed dataset in `trainer/data/` is this generator's output with
the seed's sizes; regenerate it with

    python -m trainer.synthetic --out trainer/data
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SEED = 20251104
TRAIN_SIZE = 2400
VALIDATION_SIZE = 300
TRAIN_FILENAME = "train.jsonl"
VALIDATION_FILENAME = "validation.jsonl"
# Distinct sentences are drawn until this many attempts per wanted record have been made.
MAX_ATTEMPTS_PER_RECORD = 50

DISEASES = (
    "type 2 diabetes mellitus", "hypertension", "asthma", "chronic obstructive pulmonary disease",
    "community-acquired pneumonia", "atrial fibrillation", "congestive heart failure",
    "rheumatoid arthritis", "migraine", "hypothyroidism", "chronic kidney disease",
    "urinary tract infection", "deep vein thrombosis", "major depressive disorder",
    "osteoarthritis", "gastroesophageal reflux disease", "epilepsy", "psoriasis", "cellulitis",
    "acute pancreatitis", "Crohn's disease", "hyperlipidemia", "iron deficiency anemia", "sepsis",
    "acute bronchitis", "gout", "Parkinson's disease", "multiple sclerosis",
    "pulmonary embolism", "otitis media",
)
DRUGS = (
    "metformin", "lisinopril", "atorvastatin", "amoxicillin", "warfarin", "apixaban",
    "metoprolol", "levothyroxine", "omeprazole", "albuterol", "prednisone", "insulin glargine",
    "furosemide", "sertraline", "ibuprofen", "acetaminophen", "ceftriaxone", "vancomycin",
    "methotrexate", "gabapentin", "amlodipine", "hydrochlorothiazide", "azithromycin",
    "clopidogrel", "allopurinol", "levetiracetam", "sumatriptan", "doxycycline", "enoxaparin",
    "pantoprazole",
)
SYMPTOMS = (
    "chest pain", "shortness of breath", "fever", "productive cough", "fatigue", "nausea",
    "vomiting", "dizziness", "headache", "abdominal pain", "palpitations", "joint swelling",
    "night sweats", "weight loss", "blurred vision", "lower back pain", "wheezing", "rash",
    "dysuria", "confusion", "chills", "syncope", "leg swelling", "loss of appetite", "insomnia",
)
PROCEDURES = (
    "chest X-ray", "colonoscopy", "echocardiogram", "MRI of the brain", "CT scan of the abdomen",
    "lumbar puncture", "appendectomy", "cardiac catheterization", "upper endoscopy",
    "knee arthroscopy", "hemodialysis", "coronary artery bypass grafting", "electrocardiogram",
    "skin biopsy", "spirometry", "bronchoscopy", "cholecystectomy", "total hip replacement",
    "renal ultrasound", "blood culture",
)
DOSE_AMOUNTS = ("5 mg", "10 mg", "20 mg", "25 mg", "40 mg", "50 mg", "100 mg", "250 mg",
                "500 mg", "850 mg", "1 g", "2 g", "10 units", "20 units", "2 puffs", "75 mcg")
DOSE_FREQUENCIES = ("", " once daily", " twice daily", " three times daily", " at bedtime",
                    " every 6 hours", " every 12 hours", " as needed")
AGES = tuple(str(age) for age in range(18, 95))
SEXES = ("man", "woman", "male", "female")
DAYS = tuple(str(days) for days in range(2, 15))

# {TYPE} slots are entities; {age}, {sex} and {days} are fillers that are not labelled.
TEMPLATES = (
    "Patient with {DISEASE} was started on {DRUG} {DOSAGE}.",
    "A {age}-year-old {sex} presented with {SYMPTOM} and {SYMPTOM}.",
    "{PROCEDURE} confirmed {DISEASE}.",
    "She reports {SYMPTOM} since starting {DRUG}.",
    "The patient underwent {PROCEDURE} for suspected {DISEASE}.",
    "Continue {DRUG} {DOSAGE} and repeat the {PROCEDURE} in three months.",
    "History of {DISEASE} and {DISEASE}, currently on {DRUG}.",
    "{DRUG} was discontinued because of {SYMPTOM}.",
    "He denies {SYMPTOM} or {SYMPTOM}.",
    "Vital signs were stable and the patient was discharged home on day {days}.",
    "Scheduled for {PROCEDURE} next week to evaluate {SYMPTOM}.",
    "He was given {DRUG} {DOSAGE} in the emergency department for {SYMPTOM}.",
    "Diagnosed with {DISEASE} after {PROCEDURE} showed abnormal findings.",
    "Switched from {DRUG} to {DRUG} {DOSAGE} due to poorly controlled {DISEASE}.",
    "Complains of {SYMPTOM} for {days} days; {PROCEDURE} was ordered.",
    "Known {DISEASE}, managed with {DRUG} {DOSAGE}.",
    "Follow-up visit on day {days} with no acute complaints.",
    "A {age}-year-old {sex} with {DISEASE} reports worsening {SYMPTOM}.",
    "After {PROCEDURE}, {DRUG} {DOSAGE} was prescribed for {SYMPTOM}.",
    "{SYMPTOM} resolved after {days} days of {DRUG}.",
)
_SLOT_RE = re.compile(r"\{([A-Za-z]+)\}")


@dataclass(frozen=True)
class LabelledEntity:
    text: str
    type: str
    start: int
    end: int


@dataclass(frozen=True)
class LabelledSentence:
    text: str
    entities: tuple[LabelledEntity, ...]

    def to_json(self, record_id: str) -> dict[str, object]:
        return {
            "id": record_id,
            "text": self.text,
            "entities": [
                {"text": e.text, "type": e.type, "start": e.start, "end": e.end}
                for e in self.entities
            ],
        }


def _dosage(rng: random.Random) -> str:
    return rng.choice(DOSE_AMOUNTS) + rng.choice(DOSE_FREQUENCIES)


def _pools(rng: random.Random) -> dict[str, list[str]]:
    """One shuffled pool per slot type, popped from so a sentence never repeats a value."""
    pools = {
        "DISEASE": list(DISEASES), "DRUG": list(DRUGS), "SYMPTOM": list(SYMPTOMS),
        "PROCEDURE": list(PROCEDURES), "DOSAGE": [_dosage(rng) for _ in range(3)],
        "age": [rng.choice(AGES)], "sex": [rng.choice(SEXES)], "days": [rng.choice(DAYS)],
    }
    for pool in pools.values():
        rng.shuffle(pool)
    return pools


def fill_template(template: str, rng: random.Random) -> LabelledSentence:
    """Fill a template's slots, recording the exact offsets of every entity slot."""
    pools = _pools(rng)
    text, entities, cursor = "", [], 0
    for match in _SLOT_RE.finditer(template):
        text += template[cursor:match.start()]
        slot = match.group(1)
        value = pools[slot].pop()
        if not text:
            value = value[0].upper() + value[1:]
        if slot.isupper():
            entities.append(LabelledEntity(value, slot, len(text), len(text) + len(value)))
        text += value
        cursor = match.end()
    text += template[cursor:]
    return LabelledSentence(text, tuple(entities))


def generate(count: int, seed: int = DEFAULT_SEED) -> list[LabelledSentence]:
    """`count` distinct labelled sentences; the same seed always gives the same list."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[LabelledSentence] = []
    for _ in range(count * MAX_ATTEMPTS_PER_RECORD):
        if len(out) == count:
            return out
        sentence = fill_template(rng.choice(TEMPLATES), rng)
        if sentence.text not in seen:
            seen.add(sentence.text)
            out.append(sentence)
    raise ValueError(f"could not draw {count} distinct sentences; the templates are too few")


def splits(
    train: int = TRAIN_SIZE, validation: int = VALIDATION_SIZE, seed: int = DEFAULT_SEED
) -> dict[str, list[dict[str, object]]]:
    """Train and validation records, disjoint (no sentence appears in both)."""
    sentences = generate(train + validation, seed)
    return {
        "train": [s.to_json(f"train-{i:05d}") for i, s in enumerate(sentences[:train])],
        "validation": [
            s.to_json(f"validation-{i:05d}") for i, s in enumerate(sentences[train:])
        ],
    }


def iter_jsonl_lines(records: list[dict[str, object]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def write_splits(out_dir: Path, train: int, validation: int, seed: int) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = splits(train, validation, seed)
    paths = {"train": out_dir / TRAIN_FILENAME, "validation": out_dir / VALIDATION_FILENAME}
    for name, path in paths.items():
        path.write_text("".join(iter_jsonl_lines(data[name])), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.synthetic",
        description="Write synthetic clinical NER records (train.jsonl, validation.jsonl).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--train", type=int, default=TRAIN_SIZE, help="training records")
    parser.add_argument("--validation", type=int, default=VALIDATION_SIZE,
                        help="validation records")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    for name, path in write_splits(args.out, args.train, args.validation, args.seed).items():
        print(f"wrote {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
