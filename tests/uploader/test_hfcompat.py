"""The private huggingface_hub behaviour `uploader.hfcompat` leans on, checked against the pin.

Each test fails when the installed library stops doing what the adapter assumes, so an upgrade
breaks here, by name, rather than somewhere in an upload.
"""

from __future__ import annotations

import inspect
import threading
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, _commit_api, constants
from huggingface_hub.utils import _http
from huggingface_hub.utils._runtime import is_xet_available
from packaging.requirements import Requirement

from uploader.hfcompat import count_transfer, declare_sha256, request_event_hook, xet_switch
from uploader.transfer import xet_installed

ROOT = Path(__file__).resolve().parents[2]


def _declared(extra: str, name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["optional-dependencies"][extra]:
        requirement = Requirement(line)
        if requirement.name.replace("_", "-").lower() == name:
            return requirement
    raise AssertionError(f"{name} is not declared in the {extra} extra")


@pytest.mark.parametrize("name", ["huggingface-hub", "hf-xet", "httpx2"])
def test_installed_versions_are_within_the_declared_ranges(name: str) -> None:
    # The adapter is tested against these versions only: the ranges must not admit others.
    requirement = _declared("uploader", name)
    assert requirement.specifier.contains(version(name)), (name, str(requirement))
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
        f"{name} has no upper bound: a release we never ran could be installed")


def test_default_client_runs_the_request_hook_we_keep() -> None:
    client = _http.default_client_factory()
    try:
        assert request_event_hook in client.event_hooks["request"]
    finally:
        client.close()


def test_declared_sha256_spares_the_second_read(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x" * 4096)
    operation = CommitOperationAdd(path_in_repo="weights.bin", path_or_fileobj=str(path))
    assert not operation.upload_info.is_hashed  # the library hashes lazily...
    declare_sha256(operation, "ab" * 32)
    path.unlink()  # ...and, once told, never opens the file for it
    assert operation.upload_info.sha256.hex() == "ab" * 32


def test_the_library_reads_the_xet_switch_at_call_time() -> None:
    assert xet_installed()
    assert "is_xet_available()" in inspect.getsource(_commit_api._upload_files)
    before = constants.HF_HUB_DISABLE_XET
    with xet_switch(True):
        assert is_xet_available()
    with xet_switch(False):
        assert not is_xet_available()
    assert constants.HF_HUB_DISABLE_XET is before


def test_switch_restores_the_users_value_and_serialises_opposite_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the user's HF_HUB_DISABLE_XET=1
    seen: list[bool] = []
    xet_held, lfs_done = threading.Event(), threading.Event()

    def lfs_caller() -> None:
        xet_held.wait(5)
        with xet_switch(False):
            seen.append(constants.HF_HUB_DISABLE_XET)
        lfs_done.set()

    thread = threading.Thread(target=lfs_caller)
    thread.start()
    with xet_switch(True), xet_switch(True):  # same transfer: shared
        xet_held.set()
        assert not lfs_done.wait(0.2)  # the opposite hold waits for ours
        seen.append(constants.HF_HUB_DISABLE_XET)
    thread.join(5)
    assert seen == [False, True]
    assert constants.HF_HUB_DISABLE_XET is True


def test_the_library_looks_its_progress_hooks_up_at_call_time(tmp_path: Path) -> None:
    # count_transfer replaces these module attributes; a library that bound them at import, or
    # stopped passing a progress callback to hf_xet, would leave the progress line at 0 B
    # (tests/uploader/test_progress.py uploads through both for real).
    assert "from .utils import tqdm_stream_file" in inspect.getsource(CommitOperationAdd.as_file)
    xet = inspect.getsource(_commit_api._upload_xet_files)
    assert "get_xet_session," in xet and "progress_callback=progress_callback" in xet
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x" * 10_000)
    operation = CommitOperationAdd(path_in_repo="weights.bin", path_or_fileobj=str(path))
    seen: list[int] = []
    with count_transfer({str(path): seen.append}), operation.as_file(with_tqdm=True) as stream:
        stream.read(4096)
        stream.seek(0)  # a retried PUT starts over: those bytes count once
        while stream.read(4096):
            pass
    assert seen == [4096, 8192, 10_000]
    with operation.as_file(with_tqdm=True) as stream:  # nobody watching: untouched
        stream.read()
    assert seen == [4096, 8192, 10_000]
