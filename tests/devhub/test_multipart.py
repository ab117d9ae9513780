"""LFS multipart, part by part: each part lands at its own offset of the object, so completion
hashes the object where it lies and copies nothing; what is wrong is refused and can be fixed
by sending the part again."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devhub.testing import DevHub

from .conftest import CHUNK_SIZE, USERS, make_hub

SIZE = 2 * CHUNK_SIZE + 1000  # three parts, the last one short
AUTH = {"Authorization": f"Bearer {USERS['alice']}"}  # the private repo's owner


def _start(hub: DevHub, repo: str, data: bytes) -> tuple[str, dict[int, str], str]:
    """The object's upload URL, its part URLs and its verify URL, from the batch answer."""
    headers = AUTH
    httpx.post(f"{hub.url}/api/repos/create", headers=headers,
               json={"name": repo.split("/")[1], "private": True}).raise_for_status()
    answer = httpx.post(f"{hub.url}/{repo}.git/info/lfs/objects/batch", headers=headers, json={
        "operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
        "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]})
    answer.raise_for_status()
    actions = answer.json()["objects"][0]["actions"]
    header = actions["upload"]["header"]
    assert int(header["chunk_size"]) == CHUNK_SIZE
    parts = {int(n): url for n, url in header.items() if n.isdigit()}
    return actions["upload"]["href"], parts, actions["verify"]["href"]


def _part(data: bytes, number: int) -> bytes:
    return data[(number - 1) * CHUNK_SIZE:number * CHUNK_SIZE]


def _put(url: str, body: bytes) -> httpx.Response:
    return httpx.put(url, content=body, timeout=60)


def _complete(url: str, data: bytes, etags: dict[int, str]) -> httpx.Response:
    return httpx.post(url, timeout=60, json={
        "oid": hashlib.sha256(data).hexdigest(),
        "parts": [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]})


def _verified(url: str, data: bytes) -> int:
    return httpx.post(url, headers=AUTH, json={"oid": hashlib.sha256(data).hexdigest(),
                                               "size": len(data)}).status_code


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def own_hub(tmp_path: Path) -> Iterator[DevHub]:
    """Its own data dir: the one upload in progress is this test's."""
    with make_hub(tmp_path / "hub") as running:
        yield running


def test_parts_in_any_order_resent_or_cut_short_make_the_exact_object(
        own_hub: DevHub, data: bytes) -> None:
    hub = own_hub
    href, parts, verify = _start(hub, "alice/multipart-order", data)
    assert sorted(parts) == [1, 2, 3]
    etags: dict[int, str] = {}
    # A part longer than its range is refused and must not spill into the next part.
    assert _put(parts[2], _part(data, 2) + b"x" * 10).status_code == 400
    for number in (3, 1):  # out of order
        answer = _put(parts[number], _part(data, number))
        assert answer.status_code == 200
        etags[number] = answer.headers["ETag"]
    assert _complete(href, data, {**etags, 2: '"0"'}).status_code == 400  # part 2 is missing
    wrong = bytes(b ^ 0xFF for b in _part(data, 2))
    answer = _put(parts[2], wrong)
    assert answer.status_code == 200
    refused = _complete(href, data, {**etags, 2: answer.headers["ETag"]})
    assert refused.status_code == 400 and "does not match" in refused.text
    assert _verified(verify, data) == 404
    answer = _put(parts[2], _part(data, 2))  # sent again: overwrites its own range
    etags[2] = answer.headers["ETag"]
    [assembling] = (hub.data_dir / "objects" / "uploads").glob("*/object")
    inode = assembling.stat().st_ino
    assert _complete(href, data, etags).status_code == 200
    assert _verified(verify, data) == 200
    stored = hub.data_dir / "objects" / "lfs"
    [path] = [p for p in stored.rglob(hashlib.sha256(data).hexdigest())]
    assert path.read_bytes() == data
    assert path.stat().st_ino == inode  # the parts' own file: completion copied nothing


def test_a_part_with_a_stale_etag_is_refused(hub: DevHub, data: bytes) -> None:
    href, parts, _ = _start(hub, "alice/multipart-stale", data)
    etags = {n: _put(url, _part(data, n)).headers["ETag"] for n, url in parts.items()}
    _put(parts[1], bytes(len(_part(data, 1))))  # sent again with other bytes: a new ETag
    answer = _complete(href, data, etags)
    assert answer.status_code == 400 and "ETag does not match" in answer.text
