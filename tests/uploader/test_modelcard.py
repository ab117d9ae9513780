"""The generated model card: Hub ids only in base_model, deterministic, accepted by validate-yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.hashing import FileDigest, git_blob_sha1, sha256_bytes
from shared.layout import Kind
from uploader.errors import PermanentError
from uploader.hub import HubClient, LocalFile
from uploader.modelcard import is_hub_model_id, render_model_card

# What PEFT's create_or_update_model_card writes for a model loaded from a local dir, and for a
# model whose _name_or_path is empty: both are refused by the Hub's metadata check.
PEFT_README_LOCAL_PATH = """---
base_model: /work/output/tiny-model
library_name: peft
pipeline_tag: text-generation
tags:
- base_model:adapter:/work/output/tiny-model
- lora
- transformers
---

# Model Card for Model ID
"""
PEFT_README_EMPTY = PEFT_README_LOCAL_PATH.replace(
    "base_model: /work/output/tiny-model", "base_model: ")


@pytest.mark.parametrize(("value", "expected"), [
    ("meta-llama/Llama-3.2-1B-Instruct", True),
    ("org_1/model.v2", True),
    ("unsloth/llama-3-8b-bnb-4bit", True),
    (None, False),
    ("", False),
    ("tiny", False),
    ("gpt2", False),  # not org/name shaped
    ("/abs/path/model", False),
    ("./models/tiny", False),
    ("../models/tiny", False),
    ("~/models/tiny", False),
    ("a/b/c", False),
    ("org/", False),
    ("/name", False),
    ("org/na--me", False),
    ("org/name.git", False),
    ("-org/name", False),
    (" org/name", False),
])
def test_is_hub_model_id(value: str | None, expected: bool) -> None:
    assert is_hub_model_id(value) is expected


def test_an_existing_relative_dir_is_a_local_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert is_hub_model_id("models/tiny") is False
    assert is_hub_model_id("models/other") is True


def card(**overrides: object) -> bytes:
    args: dict[str, object] = dict(
        repo_id="alice/llama3-medical-ner-checkpoint-50-20250101_000000",
        base_model="meta-llama/Llama-3.2-1B-Instruct", kind=Kind.CHECKPOINT, step=50,
        run_id="run-7f3a", metrics={"eval_loss": 0.51234567, "epoch": 1.0},
        links={"W&B run": "https://wandb.ai/team/proj/runs/7f3a"})
    args.update(overrides)
    return render_model_card(**args)  # type: ignore[arg-type]


def front_matter(raw: bytes) -> list[str]:
    text = raw.decode()
    assert text.startswith("---\n")
    return text.split("---\n")[1].splitlines()


def test_front_matter_names_the_hub_base_model_and_tags() -> None:
    lines = front_matter(card())
    assert lines[:2] == ["library_name: peft", "base_model: meta-llama/Llama-3.2-1B-Instruct"]
    assert lines[2:] == ["tags:", "- lora", "- peft", "- medical-ner", "- checkpoint-sidecar"]


@pytest.mark.parametrize("base", [None, "", "tiny", "/work/output/tiny-model"])
def test_front_matter_omits_a_local_or_missing_base_model(base: str | None) -> None:
    raw = card(base_model=base)
    assert not any(line.startswith("base_model") for line in front_matter(raw))
    assert b"library_name: peft" in raw


def test_body_has_step_metrics_run_and_links() -> None:
    text = card().decode()
    assert "- **Step:** 50" in text
    assert "- **Run id:** `run-7f3a`" in text
    assert "| epoch | 1 |" in text and "| eval_loss | 0.512346 |" in text
    assert text.index("| epoch |") < text.index("| eval_loss |")  # sorted, so deterministic
    assert "- W&B run: <https://wandb.ai/team/proj/runs/7f3a>" in text
    final = card(kind=Kind.FINAL, metrics={}, links={}, run_id=None).decode()
    assert "final LoRA adapter" in final and "No metrics were recorded" in final
    assert "not recorded" in final and "## Links" not in final


def test_rendering_is_deterministic_whatever_the_mapping_order() -> None:
    first = card(metrics={"b": 2.0, "a": 1.0}, links={"y": "https://y", "x": "https://x"})
    second = card(metrics={"a": 1.0, "b": 2.0}, links={"x": "https://x", "y": "https://y"})
    assert first == second
    assert card() == card()


def readme(content: bytes) -> LocalFile:
    digest = FileDigest(size=len(content), sha256=sha256_bytes(content),
                        git_sha1=git_blob_sha1(content))
    return LocalFile("README.md", digest, data=content)


def test_devhub_accepts_our_card_and_rejects_peft_readmes(hub_client: HubClient,
                                                          repo_id: str) -> None:
    hub_client.ensure_repo(repo_id)
    for peft_readme in (PEFT_README_LOCAL_PATH, PEFT_README_EMPTY):
        with pytest.raises(PermanentError, match="base_model"):
            hub_client.commit(repo_id, [readme(peft_readme.encode())], "PEFT's card")
    for base in ("meta-llama/Llama-3.2-1B-Instruct", "/work/output/tiny-model", None):
        content = card(repo_id=repo_id, base_model=base)
        sha = hub_client.commit(repo_id, [readme(content)], "our card")
        remote = hub_client.paths_info(repo_id, sha, ["README.md"])["README.md"]
        assert remote.git_sha1 == git_blob_sha1(content)
