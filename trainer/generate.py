"""Batched greedy generation of answers for the final F1 evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from trainer.prompts import render_prompt
from trainer.records import NerExample

log = logging.getLogger(__name__)


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the tokenizer's eos and whatever the generation config adds."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[NerExample],
    entity_types: Sequence[str],
    *,
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers (decoded new tokens only) for each example's prompt, left-padded."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stop_ids = _stop_ids(model, tokenizer)
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            prompts = [render_prompt(tokenizer, ex.text, entity_types) for ex in batch]
            inputs = tokenizer(prompts, add_special_tokens=False, padding=True,
                               return_tensors="pt").to(device)
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
            )
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    log.info("answers generated", extra={"count": len(answers)})
    return answers
