"""End-to-end fixtures: a real devhub process and helpers to inspect what reached it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from devhub.testing import DevHub
from shared.layout import list_folders
from shared.manifest import MANIFEST_FILENAME
from shared.markers import read_marker
from shared.naming import folder_timestamp, make_repo_name
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


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[DevHub]:
    with DevHub(tmp_path / "hub", users={USER: TOKEN, OTHER: OTHER_TOKEN},
                read_tokens={USER: READ_TOKEN}) as server:
        yield server


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
