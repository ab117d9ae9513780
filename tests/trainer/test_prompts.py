"""Prompt formatting and loss masking: labels are -100 on the prompt and on padding only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from trainer.prompts import (
    IGNORE_INDEX,
    PadCollator,
    answer_json,
    encode_dataset,
    encode_example,
    render_prompt,
)
from trainer.records import Entity, NerExample

TYPES = ["DISEASE", "DRUG"]
EXAMPLE = NerExample("Known asthma, managed with albuterol.",
                     (Entity("asthma", "DISEASE"), Entity("albuterol", "DRUG")))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_loss_only_on_the_answer(tokenizer) -> None:
    encoded = encode_example(tokenizer, EXAMPLE, TYPES, max_length=512)
    assert encoded is not None
    prompt_ids = tokenizer(render_prompt(tokenizer, EXAMPLE.text, TYPES),
                           add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert encoded.input_ids[:n] == prompt_ids
    assert encoded.labels[:n] == [IGNORE_INDEX] * n
    assert encoded.labels[n:] == encoded.input_ids[n:]
    answer = tokenizer.decode(encoded.labels[n:])
    assert answer.startswith(answer_json(EXAMPLE.entities))
    assert json.loads(answer_json(EXAMPLE.entities)) == [
        {"text": "asthma", "type": "DISEASE"}, {"text": "albuterol", "type": "DRUG"}]
    assert tokenizer.eos_token_id in encoded.labels[n:]  # the model learns to stop


def test_prompt_uses_the_chat_template(tokenizer) -> None:
    prompt = render_prompt(tokenizer, EXAMPLE.text, TYPES)
    assert prompt.startswith("<|begin|><|user|>\n") and prompt.endswith("<|assistant|>\n")
    assert EXAMPLE.text in prompt and "DISEASE, DRUG" in prompt


def test_plain_prompt_without_a_chat_template(tokenizer) -> None:
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    encoded = encode_example(plain, EXAMPLE, TYPES, max_length=512)
    assert encoded is not None
    n = encoded.labels.count(IGNORE_INDEX)
    assert "### Entities" in plain.decode(encoded.input_ids[:n])
    assert plain.decode(encoded.input_ids[n:]).startswith(answer_json(EXAMPLE.entities))


def test_truncation_keeps_the_prompt_or_drops_the_example(tokenizer) -> None:
    full = encode_example(tokenizer, EXAMPLE, TYPES, max_length=512)
    assert full is not None
    n = full.labels.count(IGNORE_INDEX)
    cut = encode_example(tokenizer, EXAMPLE, TYPES, max_length=n + 3)
    assert cut is not None and len(cut.input_ids) == n + 3 and cut.labels[:n] == full.labels[:n]
    assert encode_example(tokenizer, EXAMPLE, TYPES, max_length=n) is None
    with pytest.raises(ValueError, match="max_seq_length"):
        encode_dataset(tokenizer, [EXAMPLE], TYPES, max_length=n)


def test_collator_pads_labels_with_ignore_index(tokenizer) -> None:
    short = NerExample("Fever.", ())
    data = encode_dataset(tokenizer, [EXAMPLE, short], TYPES, 512)
    batch = PadCollator(tokenizer.pad_token_id)([data[0], data[1]])
    lengths = [len(data[0]["input_ids"]), len(data[1]["input_ids"])]
    assert batch["input_ids"].shape == (2, max(lengths))
    pad = max(lengths) - min(lengths)
    row = lengths.index(min(lengths))
    assert batch["labels"][row, -pad:].tolist() == [IGNORE_INDEX] * pad
    assert batch["attention_mask"][row, -pad:].tolist() == [0] * pad
    assert batch["input_ids"][row, -pad:].tolist() == [tokenizer.pad_token_id] * pad
