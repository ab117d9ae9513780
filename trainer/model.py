"""The base model and its tokenizer, loaded with `from_pretrained`, and the LoRA adapter on top."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_tokenizer(source: str | Path, *, token: str | None) -> Any:
    """The base model's tokenizer, with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), token=token)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_base_model(source: str | Path, *, token: str | None, bf16: bool) -> Any:
    """The causal LM from a Hub id or a local folder (bf16 weights when training in bf16)."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(source), token=token, dtype=dtype)
    log.info("base model loaded", extra={"source": str(source), "dtype": str(dtype)})
    return model


def add_lora(model: Any, spec: LoraSpec) -> Any:
    """Wrap the model in a PEFT LoRA adapter; only the adapter's weights train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("LoRA adapter added", extra={"trainable": trainable, "total": total,
                                          "target_modules": list(spec.target_modules)})
    return peft_model
