"""Run a selection of huggingface_hub's suite against a fresh devhub, per transfer mode.

The suite's `tests/` is copied into a scratch folder with `__init__.py`, the harness's conftest
and `testing_constants.ENDPOINT_STAGING` redirected to devhub; devhub gets the suite's users,
tokens and orgs (read from that same `testing_constants.py`). pytest runs in a subprocess (the
suite's conftest and monkeypatching must not touch the caller) and reports through JUnit XML.
"""

from __future__ import annotations

import logging
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..testing import DevHub
from .selection import out_of_scope_reason
from .source import suite_tests

log = logging.getLogger(__name__)

MODES = ("lfs", "xet")
ENDPOINT_ENV = "DEVHUB_FIDELITY_ENDPOINT"
TRANSFER_ENV = "DEVHUB_FIDELITY_TRANSFER"
TEST_TIMEOUT_S = 300  # per test (pytest-timeout): one hung request must not hang the whole run
CONFTEST = Path(__file__).with_name("suite_conftest.py")
# The org whoami must list for the suite's user, with the full names the suite asserts.
SUITE_ORG = "valid_org_hub"
PYTEST_INI = f"""[pytest]
addopts = -p no:cacheprovider -p no:randomly
filterwarnings =
    error::FutureWarning
timeout = {TEST_TIMEOUT_S}
"""


@dataclass
class Outcome:
    nodeid: str
    status: str  # passed | failed | known | skipped
    detail: str = ""


@dataclass
class ModeResult:
    mode: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def by_file(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for outcome in self.outcomes:
            row = table.setdefault(outcome.nodeid.split("::")[0], _empty_row())
            row[outcome.status] += 1
        return table

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _empty_row() -> dict[str, int]:
    return {"passed": 0, "failed": 0, "known": 0, "skipped": 0}


def prepare(scratch: Path, source: Path) -> Path:
    """The scratch copy of the suite: `<scratch>/tests/`, ready for pytest."""
    tests = scratch / "tests"
    tests.mkdir(parents=True)
    for path in source.glob("*.py"):
        shutil.copy2(path, tests / path.name)
    (tests / "__init__.py").write_text("")
    shutil.copy2(CONFTEST, tests / "conftest.py")
    with open(tests / "testing_constants.py", "a") as constants:
        # Appended, so every name the suite imports stays the library's own but this one.
        constants.write(f"\nimport os as _os\nENDPOINT_STAGING = _os.environ[{ENDPOINT_ENV!r}]\n")
    (scratch / "pytest.ini").write_text(PYTEST_INI)
    return tests


def suite_hub(data_dir: Path, constants: dict[str, object]) -> DevHub:
    """A devhub that knows the suite's users, tokens and orgs, under the suite's names."""
    c = {k: str(v) for k, v in constants.items() if isinstance(v, str)}
    users = {c["USER"]: c["TOKEN"], c["OTHER_USER"]: c["OTHER_TOKEN"]}
    users[c["ENTERPRISE_USER"]] = c["ENTERPRISE_TOKEN"]
    orgs = {SUITE_ORG: [c["USER"]], c["ENTERPRISE_ORG"]: [c["ENTERPRISE_USER"]]}
    fullnames = {c["USER"]: c["FULL_NAME"], SUITE_ORG: "Dummy Hub Org"}
    return DevHub(data_dir, users=users, orgs=orgs, fullnames=fullnames)


def run_mode(
    mode: str,
    tests: Path,
    constants: dict[str, object],
    selection: Sequence[str],
    work: Path,
    extra: Sequence[str] = (),
) -> ModeResult:
    result = ModeResult(mode)
    started = time.monotonic()
    with suite_hub(work / f"hub-{mode}", constants) as hub:
        env = _env(hub, mode, work / f"home-{mode}")
        report = work / f"junit-{mode}.xml"
        cmd = [sys.executable, "-m", "pytest", "-c", str(tests.parent / "pytest.ini")]
        cmd += ["--rootdir", str(tests.parent), "-q", "--junitxml", str(report), *extra]
        cmd += [f"tests/{node}" for node in selection]
        log.info("%s: %s", mode, " ".join(cmd))
        with open(work / f"pytest-{mode}.log", "wb") as out:
            subprocess.run(cmd, cwd=tests.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
        result.outcomes = parse_junit(report) if report.exists() else []
    result.seconds = time.monotonic() - started
    if not result.outcomes:
        tail = (work / f"pytest-{mode}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{mode}: pytest reported no test at all; its output ends:\n{tail}")
    return result


def _env(hub: DevHub, mode: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= hub.env(transfer=mode)
    env |= {
        ENDPOINT_ENV: hub.url,
        TRANSFER_ENV: mode,
        "HF_HOME": str(home),
        "HF_TOKEN": "",  # as the suite's pytest-env settings: no token but the tests' own
        "HUGGING_FACE_HUB_TOKEN": "",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # hf_xet retries storage failures for minutes by default; a failure should show quickly.
    env.setdefault("HF_XET_CLIENT_RETRY_MAX_DURATION", "20s")
    return env


def parse_junit(report: Path) -> list[Outcome]:
    """One outcome per test id; a test with a teardown error after passing counts as failed."""
    rank = {"skipped": 0, "passed": 1, "known": 2, "failed": 3}
    found: dict[str, Outcome] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        nodeid = _nodeid(case.get("classname", ""), case.get("name", ""))
        outcome = _outcome(nodeid, case)
        previous = found.get(nodeid)
        if previous is None or rank[outcome.status] > rank[previous.status]:
            found[nodeid] = outcome
    return list(found.values())


def _nodeid(classname: str, name: str) -> str:
    parts = classname.split(".")
    if parts and parts[0] == "tests":
        parts = parts[1:]
    return "::".join([f"{parts[0]}.py", *parts[1:], name]) if parts else name


def _outcome(nodeid: str, case: ET.Element) -> Outcome:
    for tag in ("failure", "error"):
        bad = case.find(tag)
        if bad is not None:
            detail = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
            reason = out_of_scope_reason(nodeid)
            return Outcome(nodeid, "known" if reason else "failed", reason or detail)
    if case.find("skipped") is not None:
        return Outcome(nodeid, "skipped", case.find("skipped").get("message", ""))  # type: ignore[union-attr]
    return Outcome(nodeid, "passed")


def run(
    selection: Sequence[str],
    modes: Iterable[str] = MODES,
    extra: Sequence[str] = (),
    keep: Path | None = None,
) -> list[ModeResult]:
    """Run `selection` in each mode against its own fresh devhub."""
    source = suite_tests()
    work = Path(tempfile.mkdtemp(prefix="devhub-fidelity-")) if keep is None else keep
    try:
        tests = prepare(work / "suite", source)
        # The suite's users and tokens, read from its own (unpatched) constants module.
        constants = runpy.run_path(str(source / "testing_constants.py"))
        return [run_mode(mode, tests, constants, selection, work, extra) for mode in modes]
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def format_table(results: Sequence[ModeResult]) -> str:
    lines = [f"{'file':<28} {'mode':<4} {'passed':>6} {'failed':>6} {'known':>6} {'skipped':>7}"]
    for result in results:
        for name, row in sorted(result.by_file().items()):
            lines.append(
                f"{name:<28} {result.mode:<4} {row['passed']:>6} {row['failed']:>6} "
                f"{row['known']:>6} {row['skipped']:>7}"
            )
        lines.append(f"{'':<28} {result.mode:<4} ({result.seconds:.0f} s)")
    return "\n".join(lines)
