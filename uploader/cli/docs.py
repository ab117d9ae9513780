"""The README's configuration reference, rendered from `UploaderSettings` so it cannot drift.

    python -m uploader.cli.docs                  print the Markdown table
    python -m uploader.cli.docs --update README.md   rewrite the table between the markers

README.md holds the table between `<!-- settings-table:start -->` and
`<!-- settings-table:end -->`; `tests/deploy/test_readme_settings.py` fails when they differ.
Imports only the settings module: no Hub client, no torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from uploader.cli.help import is_switch, plain_default
from uploader.settings import ALL, UploaderSettings, commands_of, env_name, flag_of

START_MARKER = "<!-- settings-table:start -->"
END_MARKER = "<!-- settings-table:end -->"
HEADER = ("flag", "environment variable", "default", "commands", "description")
NO_DEFAULT = "—"  # shown for a default of None: the description says what applies then


class MarkerError(ValueError):
    """The document lacks the start/end markers (or has them out of order)."""


def escape(text: str) -> str:
    """Text safe inside a GitHub table cell.

    `|` would end the cell, `<output_dir>` would vanish as an HTML tag and a lone `*` may start
    emphasis; a backslash escape renders each of them literally.
    """
    for char in "\\|<*":
        text = text.replace(char, "\\" + char)
    return text


def code(text: str) -> str:
    # Inside a code span only `|` still needs escaping (GitHub splits table cells first).
    return "`" + text.replace("|", "\\|") + "`"


def default_value(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True, validated_data={})
    return None if value is PydanticUndefined else value


def format_default(value: Any) -> str:
    """A default as one would write it in the environment (`true`, `30`, `xet`)."""
    text = plain_default(value)
    return NO_DEFAULT if text is None else code(text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def uploader_flag(name: str) -> str:
    flag = flag_of(name)
    if UploaderSettings.model_fields[name].annotation is bool and not is_switch(name):
        # The CLI adds these booleans as --x / --no-x (argparse.BooleanOptionalAction).
        flag = "--[no-]" + flag.removeprefix("--")
    return code(flag)


def commands_text(name: str) -> str:
    commands = commands_of(name)
    return "all" if commands == ALL else ", ".join(commands)


def settings_table_markdown() -> str:
    """One row per `UploaderSettings` field, in declaration order."""
    rows = []
    for name, field in UploaderSettings.model_fields.items():
        rows.append((uploader_flag(name), code(env_name(name)), format_default(default_value(field)),
                     commands_text(name), escape(field.description or "")))
    return markdown_table(HEADER, rows)


def replace_between(document: str, table: str, start: str = START_MARKER,
                    end: str = END_MARKER) -> str:
    """`document` with everything between the markers replaced by `table` on its own lines."""
    head, found, rest = document.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise MarkerError(f"the document needs {start} and, after it, {end} (each on its own line)")
    return f"{head}{start}\n{table}\n{end}{tail}"


def main(argv: Sequence[str] | None = None, *, table: str | None = None,
         start: str = START_MARKER, end: str = END_MARKER,
         prog: str = "python -m uploader.cli.docs") -> int:
    """Print the table, or with `--update FILE` rewrite it in place between the markers."""
    parser = argparse.ArgumentParser(prog=prog, description="print a settings table for README.md")
    parser.add_argument("--update", metavar="MARKDOWN", type=Path,
                        help="rewrite the table between the markers in this file")
    args = parser.parse_args(argv)
    table = settings_table_markdown() if table is None else table
    if args.update is None:
        print(table)
        return 0
    try:
        document = args.update.read_text(encoding="utf-8")
        args.update.write_text(replace_between(document, table, start, end), encoding="utf-8")
    except (OSError, MarkerError) as exc:
        print(f"error: {args.update}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
