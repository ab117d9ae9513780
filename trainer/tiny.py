"""The tiny Llama: its shape, a BPE tokenizer trained on the data, a seeded random init.

`trainer.tiny_base` pretrains it on the shipped corpus and ships the result (what
`--base-model tiny` loads); `ensure_tiny_model` builds a random one for any corpus, written as an
ordinary local model folder loaded through the same `from_pretrained` path as a real base model
(the tests use it: fast, and nothing is downloaded). Both halves are deterministic (seeded init,
deterministic BPE training), so the same inputs always give the same files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TINY_DIR_PREFIX = ".tiny-base-"
BOS, EOS, PAD = "<|begin|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny Llama; small enough that 450 CPU steps take well under a minute."""

    vocab_size: int = 1536
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    init_seed: int = 0


def fingerprint(texts: list[str], spec: TinySpec) -> str:
    digest = hashlib.sha256(repr(asdict(spec)).encode())
    digest.update(CHAT_TEMPLATE.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def train_tokenizer(texts: Iterable[str], vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, bpe)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, spec: TinySpec):  # -> LlamaForCausalLM
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def ensure_tiny_model(parent: Path, texts: list[str], spec: TinySpec | None = None) -> Path:
    """The tiny model folder under `parent` for these texts, built (atomically) if missing."""
    spec = spec or TinySpec()
    folder = Path(parent) / f"{TINY_DIR_PREFIX}{fingerprint(texts, spec)}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=folder.parent))
    staging.chmod(0o755)
    try:
        tokenizer = train_tokenizer(texts, spec.vocab_size)
        build_model(tokenizer, spec).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    except OSError:
        if (folder / "config.json").is_file():  # another process built it first
            return folder
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("tiny base model built", extra={"path": str(folder), "vocab": spec.vocab_size})
    return folder
