"""compare() on its own, and verify_commit() against devhub with damaged stored copies."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from devhub.testing import DevHub
from shared.hashing import FileDigest
from uploader.errors import VerificationError
from uploader.hub import HubClient, LocalFile, RemoteFile
from uploader.verify import compare, verify_commit

REGULAR = LocalFile("config.json", FileDigest(7, "a" * 64, "1" * 40), data=b"x" * 7)
LFS = LocalFile("adapter.safetensors", FileDigest(20, "b" * 64, "2" * 40), data=b"y" * 20)
REMOTE_OK = {
    "config.json": RemoteFile("config.json", 7, "1" * 40, None, False),
    "adapter.safetensors": RemoteFile("adapter.safetensors", 20, None, "b" * 64, True),
    ".gitattributes": RemoteFile(".gitattributes", 1519, "f" * 40, None, False),
}


def test_matching_files_and_extra_remote_files_verify() -> None:
    assert compare([REGULAR, LFS], REMOTE_OK) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"config.json": None}, ["config.json", "missing"]),
    ({"config.json": RemoteFile("config.json", 8, "1" * 40, None, False)},
     ["config.json", "size 8", "7 locally"]),
    ({"config.json": RemoteFile("config.json", 7, "9" * 40, None, False)},
     ["config.json", "git sha1"]),
    ({"adapter.safetensors": RemoteFile("adapter.safetensors", 20, None, "c" * 64, True)},
     ["adapter.safetensors", "sha256"]),
    ({"adapter.safetensors": RemoteFile("adapter.safetensors", 20, None, None, True)},
     ["adapter.safetensors", "sha256 none"]),
    # An LFS file is judged by sha256 even if the regular-file hash would match, and vice versa.
    ({"config.json": RemoteFile("config.json", 7, "1" * 40, "c" * 64, True)},
     ["config.json", "sha256"]),
])
def test_each_mismatch_is_one_problem_naming_the_file(
        change: dict[str, RemoteFile | None], words: list[str]) -> None:
    remote = {**REMOTE_OK, **change}
    remote = {k: v for k, v in remote.items() if v is not None}
    problems = compare([REGULAR, LFS], remote)
    assert len(problems) == 1
    for word in words:
        assert word in problems[0]


LocalFilesFactory = Callable[[dict[str, bytes]], list[LocalFile]]


def checkpoint_files(make_local_files: LocalFilesFactory) -> list[LocalFile]:
    return make_local_files({
        "adapter_config.json": b'{"r": 8, "lora_alpha": 16}\n',
        "trainer_state.json": b'{"global_step": 50}\n',
        # Binary content: devhub (like the Hub) stores it through LFS.
        "adapter_model.safetensors": os.urandom(64 * 1024),
    })


def test_verify_commit_passes_for_an_intact_commit(
        hub_client: HubClient, repo_id: str, make_local_files: LocalFilesFactory) -> None:
    files = checkpoint_files(make_local_files)
    hub_client.ensure_repo(repo_id)
    sha = hub_client.commit(repo_id, files, "checkpoint 50")
    verify_commit(hub_client, repo_id, sha, files)
    remote = hub_client.paths_info(repo_id, sha, [f.path_in_repo for f in files])
    assert remote["adapter_model.safetensors"].is_lfs
    assert not remote["adapter_config.json"].is_lfs


@pytest.mark.parametrize(("mode", "file"), [
    ("drop", "adapter_config.json"),
    ("drop", "adapter_model.safetensors"),
    ("wrong_hash", "trainer_state.json"),
    ("wrong_hash", "adapter_model.safetensors"),
])
def test_damage_after_the_commit_fails_verification_naming_the_file(
        devhub: DevHub, hub_client: HubClient, repo_id: str,
        make_local_files: LocalFilesFactory, mode: str, file: str) -> None:
    files = checkpoint_files(make_local_files)
    hub_client.ensure_repo(repo_id)
    sha = hub_client.commit(repo_id, files, "checkpoint 50")
    devhub.add_faults({"action": "damage", "repo": repo_id, "file": file, "mode": mode})
    with pytest.raises(VerificationError) as info:
        verify_commit(hub_client, repo_id, sha, files)
    message = info.value.one_line()
    assert file in message and "1 of 3 files" in message and sha[:12] in message
    others = [f.path_in_repo for f in files if f.path_in_repo != file]
    assert not any(other in message for other in others)


def test_damage_applied_by_the_commit_request_is_caught(
        devhub: DevHub, hub_client: HubClient, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    files = checkpoint_files(make_local_files)
    hub_client.ensure_repo(repo_id)
    devhub.add_faults({"action": "damage", "method": "POST", "path": "/commit/main$",
                       "repo": repo_id, "file": "adapter_model.safetensors",
                       "mode": "wrong_hash", "times": 1})
    sha = hub_client.commit(repo_id, files, "checkpoint 50")
    with pytest.raises(VerificationError, match=r"adapter_model\.safetensors: sha256"):
        verify_commit(hub_client, repo_id, sha, files)


def test_verification_reads_the_commit_not_the_moving_head(
        hub_client: HubClient, repo_id: str, make_local_files: LocalFilesFactory) -> None:
    first = make_local_files({"notes.txt": b"first version\n"})
    second = make_local_files({"notes.txt": b"second, longer version\n"})
    hub_client.ensure_repo(repo_id)
    sha1 = hub_client.commit(repo_id, first, "one")
    sha2 = hub_client.commit(repo_id, second, "two")
    assert sha1 != sha2
    verify_commit(hub_client, repo_id, sha1, first)  # head has moved on, the commit has not
    with pytest.raises(VerificationError, match=r"notes\.txt: size"):
        verify_commit(hub_client, repo_id, sha2, first)
