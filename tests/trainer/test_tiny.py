"""The tiny base model is deterministic: a resumed run rebuilds exactly the model it started on."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.tiny import TinySpec, ensure_tiny_model

CORPUS = ["Patient with asthma was started on albuterol 2 puffs as needed.",
          '[{"text": "asthma", "type": "DISEASE"}]'] * 20
SPEC = TinySpec(vocab_size=300)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_builds_are_byte_identical_and_loadable(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path / "a", CORPUS, SPEC)
    second = ensure_tiny_model(tmp_path / "b", CORPUS, SPEC)
    assert first.name == second.name and first.name.startswith(".tiny-base-")
    assert _files(first) == _files(second)
    assert ensure_tiny_model(tmp_path / "a", CORPUS, SPEC) == first  # reused, not rebuilt
    assert ensure_tiny_model(tmp_path / "a", CORPUS[:1], SPEC) != first  # other data, other model
    tokenizer = AutoTokenizer.from_pretrained(first)
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.config.vocab_size == len(tokenizer) <= SPEC.vocab_size
    assert tokenizer.chat_template and tokenizer.pad_token_id is not None
    assert not [p.name for p in first.parent.iterdir() if p.name.startswith(".tiny-build-")]
