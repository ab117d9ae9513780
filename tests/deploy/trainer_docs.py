"""The README's trainer tables: the settings, rendered from `TrainerSettings`, and the GPU
memory estimate for the default base, computed by `trainer.memory`.

    python -m tests.deploy.trainer_docs                    print the Markdown tables
    python -m tests.deploy.trainer_docs --update README.md  rewrite them between their markers

It lives here rather than in `trainer/` or `uploader/`: the uploader image ships without the
trainer's code, and `trainer/` belongs to the training code's owners. Shares the cell formatting
with `uploader.cli.docs`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import AliasChoices

from trainer.memory import memory_table_markdown
from trainer.settings import TrainerSettings
from uploader.cli.docs import code, default_value, escape, format_default, main, markdown_table

START_MARKER = "<!-- trainer-settings-table:start -->"
END_MARKER = "<!-- trainer-settings-table:end -->"
MEMORY_START_MARKER = "<!-- trainer-memory-table:start -->"
MEMORY_END_MARKER = "<!-- trainer-memory-table:end -->"
HEADER = ("flag", "environment variable", "default", "description")


def trainer_env_name(name: str) -> str:
    """`TRAINER_<NAME>`, or the shared name (`HF_ENDPOINT`, ...) read verbatim instead."""
    alias = TrainerSettings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1])
    return f"TRAINER_{name.upper()}"


def trainer_settings_table_markdown() -> str:
    """One row per `TrainerSettings` field; flags are kebab-case (pydantic-settings' CLI)."""
    rows = []
    for name, field in TrainerSettings.model_fields.items():
        rows.append((code("--" + name.replace("_", "-")), code(trainer_env_name(name)),
                     format_default(default_value(field)), escape(field.description or "")))
    return markdown_table(HEADER, rows)


def cli(argv: Sequence[str] | None = None) -> int:
    prog = "python -m tests.deploy.trainer_docs"
    return main(argv, table=trainer_settings_table_markdown(), start=START_MARKER,
                end=END_MARKER, prog=prog) or main(
        argv, table=memory_table_markdown(), start=MEMORY_START_MARKER, end=MEMORY_END_MARKER,
        prog=prog)


if __name__ == "__main__":
    raise SystemExit(cli())
