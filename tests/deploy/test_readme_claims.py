"""README.md's "What is tested where" table must name tests that exist.

Each row of that table pairs a claim the README makes with the pytest node ids of the tests
that show it. A node id is checked by reading its file with `ast` (nothing is imported, pytest
is not run): the file must exist under the repository and define the named class (if any) and
test. So renaming or removing a test that backs a claim fails here, until the table follows.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HEADING = "## What is tested where"
NEXT_HEADING = "## Development"
# A node id in backticks: a path to a test module, then `::`-separated names, maybe a [param].
NODE_ID = re.compile(r"`(tests/[^`\s]+?\.py(?:::[^`\s]+)+)`")
PARAM = re.compile(r"\[[^\]]*\]$")


class TableError(AssertionError):
    """The section or its table is not where, or not what, the checks expect."""


@dataclass(frozen=True)
class Row:
    claim: str
    tests: tuple[str, ...]  # node ids, in the order written


def section_of(text: str) -> str:
    """The text of the section, from its heading to the next `## ` heading."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADING]
    if len(starts) != 1:
        raise TableError(f"README.md needs exactly one {HEADING!r} section, found {len(starts)}")
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return "\n".join(lines[start:end])


def split_cells(line: str) -> list[str]:
    inner = line.strip()
    if not (inner.startswith("|") and inner.endswith("|")):
        raise TableError(f"not a table row: {line!r}")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", inner[1:-1])]


def rows_of(section: str) -> list[Row]:
    """The claim rows of the section's table; rows with an empty test cell are theme titles."""
    table = [line for line in section.splitlines() if line.lstrip().startswith("|")]
    if len(table) < 3:
        raise TableError(f"the {HEADING!r} section holds no table")
    header = [cell.lower() for cell in split_cells(table[0])]
    if header != ["claim", "test(s)"]:
        raise TableError(f"the table's header must be `| claim | test(s) |`, not {table[0]!r}")
    if not set(table[1].replace("|", "").strip()) <= set("-: "):
        raise TableError(f"the table's second line must be its separator, not {table[1]!r}")
    rows = []
    for line in table[2:]:
        cells = split_cells(line)
        if len(cells) != 2:
            raise TableError(f"a row needs 2 cells, this one has {len(cells)}: {line!r}")
        claim, tests = cells
        if not tests:
            continue  # a theme's title row
        ids = tuple(NODE_ID.findall(tests))
        leftover = NODE_ID.sub("", tests).replace(",", "").strip()
        if not claim or not ids or leftover:
            raise TableError(f"a row needs a claim and only node ids in backticks: {line!r}")
        rows.append(Row(claim, ids))
    if not rows:
        raise TableError(f"the {HEADING!r} table names no test")
    return rows


def _names(node: ast.stmt) -> list[str]:
    """The names a module- or class-level statement binds that pytest may collect."""
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.name]
    if isinstance(node, ast.Assign):  # e.g. `test_model = Machine.TestCase`
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


def _defines(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The statement of `body` that binds `name` (the last one, as Python does), or None."""
    found = None
    for node in body:
        if name in _names(node):
            found = node
    return found


def node_problem(node_id: str, root: Path = ROOT) -> str | None:
    """Why `node_id` names no test defined in its file, or None when it does."""
    path, *names = node_id.split("::")
    if not names:
        return f"{node_id}: no test named after the file"
    file = root / path
    if not path.startswith("tests/") or file.suffix != ".py" or not file.is_file():
        return f"{node_id}: no file {path}"
    base = PARAM.sub("", names[-1])
    if not base:
        return f"{node_id}: an empty test name"
    try:
        body: list[ast.stmt] = ast.parse(file.read_text(encoding="utf-8"), str(file)).body
    except SyntaxError as exc:
        return f"{node_id}: {path} does not parse ({exc.msg}, line {exc.lineno})"
    for name in names[:-1]:
        node = _defines(body, name)
        if not isinstance(node, ast.ClassDef):
            return f"{node_id}: {path} defines no class {name}"
        body = node.body
    node = _defines(body, base)
    if node is None:
        return f"{node_id}: {path} defines no {base}"
    if isinstance(node, ast.ClassDef):
        if not base.startswith("Test"):
            return f"{node_id}: class {base} is not collected (its name must start with Test)"
    elif not base.startswith("test"):
        return f"{node_id}: {base} is not collected (its name must start with test)"
    return None


def readme_rows() -> list[Row]:
    return rows_of(section_of(README.read_text(encoding="utf-8")))


def test_the_section_sits_just_before_development() -> None:
    headings = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()
                if line.startswith("## ")]
    assert HEADING in headings, f"README.md has no {HEADING!r} section"
    assert NEXT_HEADING in headings, f"README.md has no {NEXT_HEADING!r} section"
    assert headings.index(NEXT_HEADING) == headings.index(HEADING) + 1, headings


def test_every_row_pairs_a_claim_with_tests() -> None:
    rows = readme_rows()
    assert len(rows) >= 40, f"only {len(rows)} claims in the table"
    claims = [row.claim for row in rows]
    assert len(claims) == len(set(claims)), "a claim appears twice"


def test_every_test_named_in_the_table_exists() -> None:
    problems = [problem for row in readme_rows() for node_id in row.tests
                if (problem := node_problem(node_id))]
    assert problems == [], "README.md's table names tests that do not exist:\n" + "\n".join(
        problems)


# -- the checks themselves can fail ---------------------------------------------------------

MODULE = '''
import pytest

class TestGroup:
    def test_inside(self):
        pass

    class TestNested:
        def test_deep(self):
            pass

def test_plain():
    pass

async def test_async():
    pass

def helper():
    pass

class Machine:
    TestCase = object

test_machine = Machine.TestCase
'''


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    (tmp_path / "tests" / "pkg").mkdir(parents=True)
    (tmp_path / "tests" / "pkg" / "test_mod.py").write_text(MODULE)
    (tmp_path / "tests" / "pkg" / "test_broken.py").write_text("def test_x(:\n")
    return tmp_path


@pytest.mark.parametrize("node_id", [
    "tests/pkg/test_mod.py::test_plain",
    "tests/pkg/test_mod.py::test_plain[some-param]",
    "tests/pkg/test_mod.py::test_async",
    "tests/pkg/test_mod.py::TestGroup",
    "tests/pkg/test_mod.py::TestGroup::test_inside",
    "tests/pkg/test_mod.py::TestGroup::TestNested::test_deep[1-2]",
    "tests/pkg/test_mod.py::test_machine",
])
def test_a_defined_test_is_found(fake_root: Path, node_id: str) -> None:
    assert node_problem(node_id, fake_root) is None


@pytest.mark.parametrize(("node_id", "words"), [
    ("tests/pkg/test_mod.py::test_renamed", "defines no test_renamed"),
    ("tests/pkg/test_mod.py::test_renamed[param]", "defines no test_renamed"),
    ("tests/pkg/test_gone.py::test_plain", "no file"),
    ("tests/pkg/test_mod.py::TestOther::test_inside", "no class TestOther"),
    ("tests/pkg/test_mod.py::TestGroup::test_plain", "defines no test_plain"),
    ("tests/pkg/test_mod.py::test_plain::test_inside", "no class test_plain"),
    ("tests/pkg/test_mod.py::helper", "not collected"),
    ("tests/pkg/test_mod.py", "no test named"),
    ("tests/pkg/test_broken.py::test_x", "does not parse"),
])
def test_a_missing_or_renamed_test_is_named(fake_root: Path, node_id: str, words: str) -> None:
    problem = node_problem(node_id, fake_root)
    assert problem is not None and words in problem, problem


GOOD = """# x

## What is tested where

Intro.

| claim | test(s) |
|---|---|
| **Theme** | |
| a claim | `tests/a.py::test_one`, `tests/b.py::TestX::test_two[p]` |

## Development
"""


def test_the_table_is_parsed_into_claims_and_node_ids() -> None:
    assert rows_of(section_of(GOOD)) == [
        Row("a claim", ("tests/a.py::test_one", "tests/b.py::TestX::test_two[p]"))]


@pytest.mark.parametrize(("text", "words"), [
    ("# x\n\n## Development\n", "exactly one"),
    (GOOD + "\n" + GOOD, "exactly one"),
    ("## What is tested where\n\nNo table yet.\n\n## Development\n", "no table"),
    (GOOD.replace("| claim | test(s) |", "| what | where |"), "header"),
    (GOOD.replace("|---|---|", "| a | b |"), "separator"),
    (GOOD.replace("`tests/a.py::test_one`, ", "tests/a.py::test_one, "), "only node ids"),
    (GOOD.replace("| a claim |", "| |"), "needs a claim"),
    (GOOD.replace("| a claim |", "| a claim | extra |"), "2 cells"),
    ("## What is tested where\n\n| claim | test(s) |\n|---|---|\n| **Theme** | |\n",
     "names no test"),
])
def test_a_missing_or_broken_table_fails(text: str, words: str) -> None:
    with pytest.raises(TableError, match=words):
        rows_of(section_of(text))
