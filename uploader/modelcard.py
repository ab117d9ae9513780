"""The README.md (model card) the uploader generates for every checkpoint repo.

PEFT's own README cannot be uploaded as is: it writes `base_model:` empty or as a local path,
which the Hub's metadata check (validate-yaml, run on every README.md commit) rejects. Ours names
`base_model` only when it is a Hub model id, and is byte-identical for equal inputs (no clock),
so re-uploading a checkpoint changes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from shared.layout import Kind
from shared.naming import RepoNameError, validate_part

MODEL_CARD_FILENAME = "README.md"
LIBRARY_NAME = "peft"
TAGS = ("lora", "peft", "medical-ner", "checkpoint-sidecar")
# Names that look like ids but are the trainer's local stand-ins for a real model.
LOCAL_MODEL_NAMES = frozenset({"tiny"})
METRIC_FORMAT = ".6g"
_LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
_URL_RE = re.compile(r"^https?://\S+$")


def is_hub_model_id(value: str | None) -> bool:
    """True for an `org/name` Hub model id; False for local paths, blanks and stand-ins."""
    if not value or value != value.strip() or value in LOCAL_MODEL_NAMES:
        return False
    if value.startswith(_LOCAL_PREFIXES) or os.path.isabs(value):
        return False
    namespace, sep, name = value.partition("/")
    if not sep or "/" in name:
        return False
    try:
        validate_part(namespace, "namespace")
        validate_part(name, "model name")
    except RepoNameError:
        return False
    # A relative path that exists here is the trainer's local model, not a Hub id.
    return not Path(value).is_dir()


def render_model_card(
    *,
    repo_id: str,
    base_model: str | None,
    kind: Kind,
    step: int,
    run_id: str | None,
    metrics: Mapping[str, float],
    links: Mapping[str, str],
) -> bytes:
    """README.md bytes: YAML front matter the Hub accepts, then step, metrics, run and links."""
    hub_base = base_model if is_hub_model_id(base_model) else None
    parts = [
        _front_matter(hub_base),
        _summary(repo_id, base_model, hub_base, kind, step, run_id),
        _metrics_table(metrics),
        _links(links),
        _usage(repo_id, hub_base),
    ]
    return ("\n".join(p for p in parts if p)).encode("utf-8")


def _front_matter(hub_base: str | None) -> str:
    lines = ["---", f"library_name: {LIBRARY_NAME}"]
    if hub_base:
        # Validated as an org/name id above, so a plain YAML scalar is safe.
        lines.append(f"base_model: {hub_base}")
    lines.append("tags:")
    lines.extend(f"- {tag}" for tag in TAGS)
    lines.append("---")
    return "\n".join(lines) + "\n"


def _summary(repo_id: str, base_model: str | None, hub_base: str | None, kind: Kind, step: int,
             run_id: str | None) -> str:
    what = "final LoRA adapter" if kind is Kind.FINAL else "LoRA adapter checkpoint"
    if hub_base:
        base = f"`{hub_base}`"
    elif base_model:
        base = "a local model (not a Hub id, so not linked in the metadata)"
    else:
        base = "not recorded"
    lines = [
        f"# {repo_id.rpartition('/')[2]}",
        "",
        f"A {what} for medical named-entity recognition, uploaded by checkpoint-sidecar.",
        "",
        f"- **Kind:** {kind.value}",
        f"- **Step:** {step}",
        f"- **Run id:** `{run_id}`" if run_id else "- **Run id:** not recorded",
        f"- **Base model:** {base}",
        "",
    ]
    return "\n".join(lines)


def _metrics_table(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "## Metrics\n\nNo metrics were recorded with this checkpoint.\n"
    rows = [f"| {_cell(name)} | {format(float(metrics[name]), METRIC_FORMAT)} |"
            for name in sorted(metrics)]
    return "\n".join(["## Metrics", "", "| metric | value |", "|---|---|", *rows, ""])


def _links(links: Mapping[str, str]) -> str:
    if not links:
        return ""
    rows = []
    for label in sorted(links):
        url = links[label].strip()
        shown = f"<{url}>" if _URL_RE.match(url) else f"`{url}`"
        rows.append(f"- {_cell(label)}: {shown}")
    return "\n".join(["## Links", "", *rows, ""])


def _usage(repo_id: str, hub_base: str | None) -> str:
    base = hub_base or "<base model id or path>"
    return "\n".join([
        "## Usage",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{base}")',
        f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        "```",
        "",
    ])


def _cell(text: str) -> str:
    """Markdown-safe text for a table cell or list item: one line, no table separators."""
    return " ".join(str(text).split()).replace("|", "\\|")
