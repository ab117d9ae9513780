"""The base model and its tokenizer, loaded with `from_pretrained` (full precision, half
precision or 4-bit QLoRA), prepared for training, and the LoRA adapter on top."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.precision import Precision

log = logging.getLogger(__name__)

AUTO = "auto"
# Reentrant checkpointing needs an input that requires grad, which a frozen base does not give
# (PEFT works around it with hooks); the non-reentrant variant needs no workaround.
CHECKPOINTING_KWARGS: dict[str, Any] = {"use_reentrant": False}


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: int
    dropout: float
    # PEFT's `target_modules`: module names, or the string "all-linear" (never ["all-linear"],
    # which PEFT would look for as a module literally named so).
    target_modules: str | tuple[str, ...]


@dataclass(frozen=True)
class LoadSpec:
    """How to load the base model."""

    precision: Precision
    load_in_4bit: bool = False
    attn_implementation: str = AUTO


def load_tokenizer(source: str | Path, *, token: str | None) -> Any:
    """The base model's tokenizer, with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), token=token)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def quantization_config(precision: Precision) -> Any:
    """QLoRA's 4-bit setup: NF4 weights, double quantisation, compute in the run's precision
    (bf16 where the GPU has it)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=precision.torch_dtype,
    )


def from_pretrained_kwargs(spec: LoadSpec, *, token: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"token": token, "dtype": spec.precision.torch_dtype}
    if spec.attn_implementation != AUTO:
        kwargs["attn_implementation"] = spec.attn_implementation
    if spec.load_in_4bit:
        from accelerate import PartialState

        kwargs["quantization_config"] = quantization_config(spec.precision)
        # Quantised weights cannot be moved after loading: each process loads onto its own GPU.
        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def load_base_model(source: str | Path, *, token: str | None, spec: LoadSpec) -> Any:
    """The causal LM from a Hub id or a local folder."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source),
                                                 **from_pretrained_kwargs(spec, token=token))
    log.info("base model loaded", extra={"source": str(source), "dtype": spec.precision.value,
                                         "load_in_4bit": spec.load_in_4bit,
                                         "attn_implementation": model.config._attn_implementation})
    return model


def prepare_for_training(
    model: Any, *, load_in_4bit: bool, gradient_checkpointing: bool, packing: bool = False
) -> Any:
    """What must happen before the adapter goes on: k-bit preparation (norms and head in fp32,
    base frozen) for 4-bit, and no KV cache in training forwards with checkpointing or packing
    (generation still uses one: it follows the generation config)."""
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    if gradient_checkpointing or packing:
        # Useless in training, wrong under recomputation, and with a cache transformers does not
        # read packed position ids as example boundaries (attention would cross examples).
        model.config.use_cache = False
    return model


def add_lora(model: Any, spec: LoraSpec) -> Any:
    """Wrap the model in a PEFT LoRA adapter; only the adapter's weights train."""
    from peft import LoraConfig, get_peft_model

    targets = spec.target_modules
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("LoRA adapter added", extra={"trainable": trainable, "total": total,
                                          "target_modules": sorted(config.target_modules)})
    return peft_model

