"""Bring in huggingface_hub's test suite for the installed release, at run time.

The PyPI sdist of a release ships `tests/*.py` (test modules, `testing_constants.py`,
`testing_utils.py`) but not `tests/conftest.py`, `tests/__init__.py` or `tests/fixtures/`. The
selection devhub runs needs no fixture file, and the harness brings its own conftest
(`devhub/fidelity/suite_conftest.py`), so the sdist is enough: `pip download` of it works on any
machine that reaches PyPI. `DEVHUB_FIDELITY_SOURCE` may name a directory holding `tests/` instead
(an extracted sdist, or a checkout of the library's repository at the matching release).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "huggingface_hub"
SOURCE_ENV = "DEVHUB_FIDELITY_SOURCE"
CACHE_ENV = "DEVHUB_FIDELITY_CACHE"
# Files the harness needs from the suite; missing ones mean a wrong or truncated source.
REQUIRED = ("testing_constants.py", "testing_utils.py", "test_hf_api.py")


class SuiteUnavailable(RuntimeError):
    """huggingface_hub's tests could not be had: the measure cannot run."""


def default_cache() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "devhub-fidelity"
    )
    return Path(base)


def installed_version() -> str:
    return version(PACKAGE)


def suite_tests(cache: Path | None = None) -> Path:
    """The `tests/` directory of huggingface_hub's suite for the installed release."""
    explicit = os.environ.get(SOURCE_ENV)
    tests = Path(explicit) / "tests" if explicit else _from_sdist(cache or default_cache())
    missing = [name for name in REQUIRED if not (tests / name).is_file()]
    if missing:
        raise SuiteUnavailable(f"{tests} lacks {', '.join(missing)}")
    return tests


def _from_sdist(cache: Path) -> Path:
    release = installed_version()
    root = cache / f"{PACKAGE}-{release}"
    if (root / "tests" / REQUIRED[0]).is_file():
        return root / "tests"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{PACKAGE}-{release}.tar.gz"
    if not archive.is_file():
        _download(release, cache)
    _extract_tests(archive, root)
    return root / "tests"


def _download(release: str, cache: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(cache), f"{PACKAGE}=={release}"]
    log.info("downloading the %s %s sdist: %s", PACKAGE, release, " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SuiteUnavailable(
            f"pip download of the {PACKAGE} {release} sdist failed ({done.returncode}):\n"
            f"{done.stderr[-2000:]}"
        )


def _extract_tests(archive: Path, root: Path) -> None:
    """Only `<sdist>/tests/` is extracted; into a temporary folder, then renamed (atomic)."""
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"{root.name}/tests/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        if not members:
            raise SuiteUnavailable(f"{archive} holds no {prefix}")
        tar.extractall(staging, members=members, filter="data")
    shutil.rmtree(root, ignore_errors=True)
    (staging / root.name).rename(root)
    shutil.rmtree(staging, ignore_errors=True)
