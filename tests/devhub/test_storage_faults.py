"""Faults on the Xet storage service, as hf_xet experiences them, and `corrupt` damage.

hf_xet retries storage failures itself; the conftest shortens its base delay to 50 ms.
"""

import contextlib
import os
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

from devhub.testing import DevHub

from .conftest import USERS, forget_xet_shard_cache, storage_calls

KB = 1024


def _calls(hub: DevHub, start: int, part: str) -> list[dict]:
    return [e for e in hub.log()[start:] if part in e["path"]]


def _upload(alice: HfApi, repo_id: str, data: bytes, path: str = "w.safetensors") -> None:
    alice.create_commit(repo_id, [CommitOperationAdd(path, data)], commit_message=path)


def _download(hub: DevHub, repo_id: str, path: str, cache: Path) -> bytes:
    got = hf_hub_download(repo_id, path, endpoint=hub.url, token=USERS["alice"], cache_dir=cache)
    return Path(got).read_bytes()


@pytest.mark.parametrize(
    ("rule", "part"),
    [
        ({"action": "status", "status": 503, "method": "POST", "path": "/v1/xorbs/"}, "/v1/xorbs/"),
        ({"action": "status", "status": 429, "method": "POST", "path": "/v1/shards"}, "/v1/shards"),
        (
            {"action": "reset", "when": "mid_body", "after_bytes": 64 * KB, "path": "/v1/xorbs/"},
            "/v1/xorbs/",
        ),
        ({"action": "stall", "seconds": 1, "path": "/v1/shards$"}, "/v1/shards"),
        ({"action": "status", "status": 500, "path": "/xet-write-token/"}, "/xet-write-token/"),
    ],
    ids=["503-xorb", "429-shard", "reset-mid-xorb", "stalled-shard", "500-write-token"],
)
def test_upload_recovers_from_one_storage_fault(
    hub: DevHub, alice: HfApi, repo_id: str, xet: None, rule: dict, part: str
) -> None:
    alice.create_repo(repo_id)
    hub.add_faults({**rule, "times": 1})
    start = len(hub.log())
    data = os.urandom(300 * KB)
    _upload(alice, repo_id, data)
    calls = _calls(hub, start, part)
    assert calls[0]["fault"] is not None and calls[0]["fault"]["action"] == rule["action"]
    assert calls[-1]["status"] == 200 and calls[-1]["fault"] is None
    [info] = alice.get_paths_info(repo_id, ["w.safetensors"])
    assert info.xet_hash is not None and info.size == len(data)


def test_download_recovers_from_storage_faults(
    hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path, xet: None
) -> None:
    alice.create_repo(repo_id)
    data = os.urandom(300 * KB)
    _upload(alice, repo_id, data)
    hub.add_faults(
        [
            {"action": "status", "status": 503, "path": "/v1/reconstructions/", "times": 1},
            {"action": "reset", "path": "/fetch/", "times": 1},
        ]
    )
    start = len(hub.log())
    assert _download(hub, repo_id, "w.safetensors", tmp_path) == data
    assert [e["status"] for e in _calls(hub, start, "/v1/reconstructions/")] == [503, 200]
    assert [e["status"] for e in _calls(hub, start, "/fetch/")] == [None, 206]


def test_storage_rules_match_by_user_throttle_and_delay(
    hub: DevHub, alice: HfApi, repo_id: str, xet: None
) -> None:
    alice.create_repo(repo_id)
    rate = 400 * KB
    hub.add_faults(
        [
            {"action": "status", "status": 503, "path": "/v1/xorbs/", "user": "bob"},
            {"action": "throttle", "bytes_per_second": rate, "path": "/v1/xorbs/", "times": 1},
            {
                "action": "delay",
                "seconds": 0.5,
                "method": "POST",
                "path": "/v1/shards$",
                "times": 1,
            },
        ]
    )
    data = os.urandom(300 * KB)
    started = time.monotonic()
    _upload(alice, repo_id, data)
    assert time.monotonic() - started >= len(data) / rate * 0.9
    [xorb] = _calls(hub, 0, "/v1/xorbs/")[-1:]
    assert xorb["user"] == "alice" and xorb["fault"]["action"] == "throttle"
    assert hub.faults()[0]["hits"] == 0  # the bob-only rule never fired
    [shard] = _calls(hub, 0, "/v1/shards")[-1:]
    assert shard["fault"]["action"] == "delay" and shard["status"] == 200
    assert shard["duration"] >= 0.5


@pytest.fixture
def stored(hub: DevHub, alice: HfApi, repo_id: str, transfer: str) -> tuple[str, bytes]:
    alice.create_repo(repo_id)
    data = os.urandom(400 * KB)
    _upload(alice, repo_id, data)
    return repo_id, data


def test_corrupt_is_noticed_only_by_a_read_back_and_repaired_by_a_reupload(
    hub: DevHub, alice: HfApi, stored: tuple[str, bytes], tmp_path: Path, transfer: str
) -> None:
    repo_id, data = stored
    before = alice.get_paths_info(repo_id, ["w.safetensors"])[0]
    assert (before.xet_hash is not None) == (transfer == "xet")
    hub.add_faults(
        {"action": "damage", "repo": repo_id, "file": "w.safetensors", "mode": "corrupt"}
    )
    after = alice.get_paths_info(repo_id, ["w.safetensors"])[0]
    assert (after.lfs, after.xet_hash, after.size, after.blob_id) == (
        before.lfs,
        before.xet_hash,
        before.size,
        before.blob_id,
    )
    url = f"{hub.url}/{repo_id}/resolve/main/w.safetensors"
    plain = httpx.get(url, headers={"authorization": f"Bearer {USERS['alice']}"})
    assert len(plain.content) == len(data) and plain.content != data
    # Through the client in its own mode: wrong bytes, or an error, never the data.
    with contextlib.suppress(OSError, RuntimeError):
        assert _download(hub, repo_id, "w.safetensors", tmp_path / "c1") != data

    # Sending the same content again (under another path: the client skips an unchanged one)
    # replaces the damaged copy; hf_xet only re-sends xorbs its shard cache does not remember.
    forget_xet_shard_cache()
    start = len(hub.log())
    _upload(alice, repo_id, data, path="again.safetensors")
    sent = [e for e in hub.log()[start:] if e["method"] in ("PUT", "POST") and e["bytes_in"]]
    if transfer == "xet":
        assert [e for e in storage_calls(sent) if "/v1/xorbs/" in e["path"]]
    else:
        assert [e for e in sent if e["path"].startswith("/_lfs/")]
    assert _download(hub, repo_id, "w.safetensors", tmp_path / "c2") == data
    plain = httpx.get(url, headers={"authorization": f"Bearer {USERS['alice']}"})
    assert plain.content == data


def test_corrupt_regular_file(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    alice.create_commit(repo_id, [CommitOperationAdd("a.txt", b"hello")], commit_message="a")
    hub.add_faults({"action": "damage", "repo": repo_id, "file": "a.txt", "mode": "corrupt"})
    url = f"{hub.url}/{repo_id}/resolve/main/a.txt"
    headers = {"authorization": f"Bearer {USERS['alice']}"}
    assert httpx.get(url, headers=headers).content not in (b"hello", b"")
    alice.create_commit(repo_id, [CommitOperationAdd("b.txt", b"hello")], commit_message="b")
    assert httpx.get(url, headers=headers).content == b"hello"
