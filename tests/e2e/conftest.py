"""End-to-end fixtures: a real devhub process and helpers to inspect what reached it."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, constants, snapshot_download

from devhub.testing import DevHub
from devhub.xet import STORAGE_PREFIX
from shared.layout import list_folders
from shared.manifest import MANIFEST_FILENAME
from shared.markers import read_marker
from shared.naming import folder_timestamp, make_repo_name
from tests.support import processes
from tests.support.checkpoints import folder_bytes
from tests.support.processes import kill_leftovers

USER, TOKEN = "alice", "hf_alice_write_token_0123456789"
READ_TOKEN = "hf_alice_read_token_0123456789"
OTHER, OTHER_TOKEN = "bob", "hf_bob_write_token_0123456789"
PREFIX = "llama3-medical-ner"
GENERATED = {"README.md", MANIFEST_FILENAME, ".gitattributes"}


@pytest.fixture(autouse=True)
def _no_leftover_uploaders() -> Iterator[None]:
    yield
    kill_leftovers()


class Mode(enum.StrEnum):
    """How a new user's setup meets the server; every e2e test runs in XET unless it asks."""

    XET = "xet"  # the Hub as it is: devhub with Xet, the uploader's default transfer
    FALLBACK = "no-xet-server"  # a server without Xet (`--no-xet`), the default transfer
    DISABLED = "hf-hub-disable-xet"  # devhub with Xet, the user's HF_HUB_DISABLE_XET=1


# For the modules whose behaviour the transfer can change: `pytestmark = EVERY_MODE`.
EVERY_MODE = pytest.mark.parametrize("transfer_mode", list(Mode), indirect=True)


@pytest.fixture
def transfer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Mode:
    mode = Mode(getattr(request, "param", Mode.XET))
    disabled = mode is Mode.DISABLED
    monkeypatch.setattr(processes, "TRANSFER_ENV", {"HF_HUB_DISABLE_XET": "1"} if disabled else {})
    # The test's own downloads (snapshot_download) take the same path as the user's would.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", disabled)
    return mode


@pytest.fixture
def hub(tmp_path: Path, transfer_mode: Mode) -> Iterator[DevHub]:
    with DevHub(tmp_path / "hub", users={USER: TOKEN, OTHER: OTHER_TOKEN},
                read_tokens={USER: READ_TOKEN}, xet=transfer_mode is not Mode.FALLBACK) as server:
        yield server


def upload_rule(mode: Mode, **rule: Any) -> dict[str, Any]:
    """A fault rule on the requests that carry file bytes in this mode (xorbs, or LFS PUTs)."""
    if mode is Mode.XET:
        return {"method": "POST", "path": f"^{STORAGE_PREFIX}/.*/v1/xorbs/", **rule}
    return {"method": "PUT", "path": "^/_lfs/", **rule}


def is_upload(mode: Mode, entry: dict[str, Any]) -> bool:
    rule = upload_rule(mode)
    return entry["method"] == rule["method"] and re.search(rule["path"], entry["path"]) is not None


def _token_route(entry: dict[str, Any]) -> bool:
    return "/xet-write-token/" in entry["path"] or "/xet-read-token/" in entry["path"]


def _storage(entry: dict[str, Any]) -> bool:
    return entry["path"].startswith(STORAGE_PREFIX)


def assert_transfer(hub: DevHub, mode: Mode, uploader_processes: int = 1) -> None:
    """The request log shows the transfer the mode must take (the issue's acceptance points)."""
    log = hub.log()
    if mode is Mode.XET:
        uploads = [e for e in log if _storage(e) and e["method"] == "POST"]
        assert any("/xorbs/" in e["path"] for e in uploads), "no xorb reached Xet storage"
        assert any("/shards" in e["path"] for e in uploads), "no shard reached Xet storage"
        assert not [e for e in log if "/info/lfs/objects/batch" in e["path"]], "LFS was used"
    elif mode is Mode.FALLBACK:
        misses = [e for e in log if _token_route(e) and e["status"] == 404]
        assert 1 <= len(misses) <= uploader_processes, f"{len(misses)} Xet token 404s"
        assert any("/info/lfs/objects/batch" in e["path"] for e in log), "LFS was not used"
    else:
        touched = [e["path"] for e in log if _token_route(e) or _storage(e)]
        assert not touched, f"HF_HUB_DISABLE_XET=1, yet Xet endpoints were called: {touched[:3]}"


@pytest.fixture
def api(hub: DevHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


def expected_repo(output_dir: Path, folder: str, step: int | None = None) -> str:
    from shared.layout import classify

    ref = classify(folder)
    assert ref is not None
    marker = read_marker(output_dir, folder)
    when = folder_timestamp(output_dir / folder, marker)
    return make_repo_name(USER, PREFIX, ref.kind, step if step is not None else
                          (marker.step if marker else ref.step), when).repo_id


def repos(api: HfApi) -> list[str]:
    return sorted(m.id for m in api.list_models(author=USER))


def downloaded(api: HfApi, repo_id: str, dest: Path) -> dict[str, bytes]:
    path = snapshot_download(repo_id, endpoint=api.endpoint, token=api.token,
                             local_dir=dest / repo_id.replace("/", "__"))
    files = folder_bytes(Path(path))
    return {k: v for k, v in files.items() if not k.startswith(".cache/")}


def assert_byte_identical(api: HfApi, repo_id: str, source: dict[str, bytes], dest: Path) -> None:
    remote = downloaded(api, repo_id, dest)
    local = {k: v for k, v in source.items() if k not in GENERATED}
    remote_copied = {k: v for k, v in remote.items() if k not in GENERATED}
    assert remote_copied == local, f"{repo_id} differs from its source folder"
    assert MANIFEST_FILENAME in remote and "README.md" in remote


def snapshot_sources(output_dir: Path) -> dict[str, dict[str, bytes]]:
    return {ref.name: folder_bytes(ref.path(output_dir)) for ref in list_folders(output_dir)}


def commit_count(api: HfApi, repo_id: str) -> int:
    return len(api.list_repo_commits(repo_id))
