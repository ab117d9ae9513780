"""README.md's configuration tables must equal the ones generated from the settings models.

Regenerate after changing a setting:
    python -m uploader.cli.docs --update README.md
    python -m tests.deploy.trainer_docs --update README.md
"""

from __future__ import annotations

import pytest

from tests.deploy import deployfiles as df
from tests.deploy import trainer_docs
from uploader.cli import docs
from uploader.settings import UploaderSettings, env_name, flag_of

README = df.ROOT / "README.md"

TABLES = {
    "uploader": (docs.settings_table_markdown, docs.START_MARKER, docs.END_MARKER,
                 "python -m uploader.cli.docs --update README.md"),
    "trainer": (trainer_docs.trainer_settings_table_markdown, trainer_docs.START_MARKER,
                trainer_docs.END_MARKER, "python -m tests.deploy.trainer_docs --update README.md"),
}


@pytest.mark.parametrize("which", sorted(TABLES))
def test_readme_holds_the_generated_table(which: str) -> None:
    render, start, end, fix = TABLES[which]
    text = README.read_text(encoding="utf-8")
    try:
        expected = docs.replace_between(text, render(), start, end)
    except docs.MarkerError:
        pytest.fail(f"README.md lacks {start} ... {end}; add both markers, then run `{fix}`")
    assert text == expected, f"README.md's {which} settings table is stale; run `{fix}`"


def test_uploader_table_has_one_row_per_setting() -> None:
    table = docs.settings_table_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == len(UploaderSettings.model_fields)
    for row, name in zip(rows, UploaderSettings.model_fields, strict=True):
        assert f"`{env_name(name)}`" in row
        assert flag_of(name).removeprefix("--") in row


def test_cells_cannot_break_the_table() -> None:
    assert docs.escape("a|b <dir> *.pem") == "a\\|b \\<dir> \\*.pem"
    assert docs.code("x|y") == "`x\\|y`"
    assert docs.format_default(None) == docs.NO_DEFAULT
    assert docs.format_default(True) == "`true`"
    assert docs.format_default(30.0) == "`30`"


def test_replace_between_rewrites_only_the_marked_part() -> None:
    document = f"intro\n{docs.START_MARKER}\nold\n{docs.END_MARKER}\noutro\n"
    assert docs.replace_between(document, "new") == (
        f"intro\n{docs.START_MARKER}\nnew\n{docs.END_MARKER}\noutro\n")
    with pytest.raises(docs.MarkerError):
        docs.replace_between("no markers", "new")


def test_update_writes_the_table_into_a_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "README.md"
    target.write_text(f"# x\n{docs.START_MARKER}\n{docs.END_MARKER}\n", encoding="utf-8")
    assert docs.main(["--update", str(target)]) == 0
    assert docs.settings_table_markdown() in target.read_text(encoding="utf-8")
    assert docs.main(["--update", str(tmp_path / "missing.md")]) == 2
