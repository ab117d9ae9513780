"""NER as instruction tuning: the prompt, the JSON answer, and tokens with the prompt masked.

The sentence goes into a user turn of the model's chat template (a plain instruction layout when
the tokenizer has none); the answer is a JSON list of `{"text", "type"}` objects. Prompt and
answer are tokenized separately, exactly as generation later sees them, and the prompt's labels
are -100 so the loss covers only the answer (and the end-of-turn token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.records import Entity, NerExample

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def instruction(entity_types: Sequence[str]) -> str:
    types = ", ".join(entity_types)
    return (
        f"Extract the medical entities ({types}) from the sentence. Answer with a JSON list of "
        'objects with the keys "text" and "type"; answer [] when there are none.'
    )


def answer_json(entities: Sequence[Entity]) -> str:
    return json.dumps([{"text": e.text, "type": e.type} for e in entities], ensure_ascii=False)


def _user_message(text: str, entity_types: Sequence[str]) -> str:
    return f"{instruction(entity_types)}\n\nSentence: {text}"


def render_prompt(tokenizer: Any, text: str, entity_types: Sequence[str]) -> str:
    """The prompt up to where the answer starts, as a string with special tokens spelled out."""
    message = _user_message(text, entity_types)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    return f"{tokenizer.bos_token or ''}### Instruction\n{message}\n\n### Entities\n"


def render_answer(tokenizer: Any, prompt: str, text: str, entity_types: Sequence[str],
                  answer: str) -> str:
    """The answer as the template closes the assistant turn (answer + eos when it cannot tell)."""
    fallback = answer + (tokenizer.eos_token or "")
    if not getattr(tokenizer, "chat_template", None):
        return fallback
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": _user_message(text, entity_types)},
         {"role": "assistant", "content": answer}],
        tokenize=False,
    )
    if not full.startswith(prompt) or answer not in full[len(prompt):]:
        return fallback
    return full[len(prompt):]


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]


def encode_example(
    tokenizer: Any, example: NerExample, entity_types: Sequence[str], max_length: int
) -> EncodedExample | None:
    """Token ids with the prompt masked; None when even the prompt does not fit."""
    prompt = render_prompt(tokenizer, example.text, entity_types)
    answer = render_answer(tokenizer, prompt, example.text, entity_types,
                           answer_json(example.entities))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length:
        return None
    answer_ids = answer_ids[: max_length - len(prompt_ids)]
    return EncodedExample(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
    )


class EncodedDataset(torch.utils.data.Dataset):
    """A list of encoded examples as a map-style dataset for `Trainer`."""

    def __init__(self, examples: list[EncodedExample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


def encode_dataset(
    tokenizer: Any, examples: Sequence[NerExample], entity_types: Sequence[str], max_length: int
) -> EncodedDataset:
    encoded = [encode_example(tokenizer, ex, entity_types, max_length) for ex in examples]
    kept = [e for e in encoded if e is not None]
    if len(kept) < len(encoded):
        log.warning("examples dropped: prompt longer than max_seq_length",
                    extra={"dropped": len(encoded) - len(kept), "max_seq_length": max_length})
    if not kept:
        raise ValueError(f"no example fits max_seq_length={max_length}; raise it")
    return EncodedDataset(kept)


@dataclass(frozen=True)
class PadCollator:
    """Right-pads a batch: pad id for inputs, -100 for labels, 0 in the attention mask."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids, labels, mask = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            input_ids.append(f["input_ids"] + [self.pad_token_id] * pad)
            labels.append(f["labels"] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


def collator(pad_token_id: int, *, packing: bool) -> Any:
    """Right padding, or with packing one padding-free row per batch: position ids restart for
    each example, so attention (sdpa, eager, flash-attention) never crosses examples, and the
    first label of each example is -100 (it already is: the prompt is masked)."""
    if not packing:
        return PadCollator(pad_token_id)
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


def tokenizer_corpus(examples: Sequence[NerExample], entity_types: Sequence[str]) -> list[str]:
    """The texts a tokenizer trained for this task should see: every user turn and answer."""
    corpus: list[str] = []
    for example in examples:
        corpus.append(_user_message(example.text, entity_types))
        corpus.append(answer_json(example.entities))
    return corpus
