"""The GPU memory estimate: the 8B shape adds up to Llama-3 8B's parameter count, each option
lowers what it should, and README.md holds the generated table."""

from __future__ import annotations

from pathlib import Path

from tests.deploy import trainer_docs
from trainer.memory import LLAMA3_8B, VARIANTS, estimate, memory_table_markdown
from uploader.cli import docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_shape_is_llama3_8b() -> None:
    assert LLAMA3_8B.params == 8_030_261_248  # the model card's count
    assert LLAMA3_8B.lora_params(16) == 6_815_744  # r=16 on q_proj and v_proj, 32 layers


def test_each_option_lowers_memory() -> None:
    by_flags = {v.flags.split(" (")[0]: estimate(v) for v in VARIANTS}
    fp32 = by_flags["`--dtype fp32`"]
    bf16 = by_flags["`--dtype bf16`"]
    checkpointed = by_flags["`--dtype bf16 --gradient-checkpointing`"]
    qlora = by_flags["`--load-in-4bit`"]
    qlora_checkpointed = by_flags["`--load-in-4bit --gradient-checkpointing`"]
    assert fp32.weights_gb == 2 * bf16.weights_gb
    assert 7 < qlora.weights_gb < bf16.weights_gb / 2 + 0.5  # head and embeddings stay fp32
    assert checkpointed.worst_gb < bf16.worst_gb and qlora_checkpointed.worst_gb < qlora.worst_gb
    for e in by_flags.values():
        assert e.weights_gb < e.typical_gb < e.worst_gb
    assert qlora_checkpointed.worst_gb < 16 < bf16.typical_gb  # QLoRA fits a 16 GB card


def test_readme_holds_the_generated_memory_table() -> None:
    text = README.read_text(encoding="utf-8")
    expected = docs.replace_between(text, memory_table_markdown(),
                                    trainer_docs.MEMORY_START_MARKER,
                                    trainer_docs.MEMORY_END_MARKER)
    assert text == expected, "stale; run python -m tests.deploy.trainer_docs --update README.md"
