"""devhub keeps uploaded bytes without flushing them to the disk on the request's path.

Its promise is to survive `kill -9` and restarts (tests/devhub/test_restart.py), which the page
cache gives. An fsync per part, per assembled object and per xorb made every benchmark measure
this machine's disk on the server's side: 2-3 s of a 1 GiB LFS upload went to the completion.
"""

import os
from pathlib import Path

import pytest

from devhub.objects import ObjectStore
from devhub.xet_store import XetStore

from .xet_build import xorb

BULK = 1024 * 1024  # metadata (an index, a ref) is still written durably; bytes are not


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every file fsynced while the test runs."""
    sizes: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return sizes


def test_lfs_bytes_are_kept_without_fsync(tmp_path: Path, flushed: list[int]) -> None:
    store = ObjectStore(tmp_path)
    data = os.urandom(3 * 1024 * 1024)
    staged = store.stage([data[:1024], data[1024:]])
    final = store.adopt_lfs(staged)
    assert final.read_bytes() == data
    assert store.has_lfs(staged.sha256, len(data))
    assert not [size for size in flushed if size >= BULK]


def test_xorbs_are_kept_without_fsync(tmp_path: Path, flushed: list[int]) -> None:
    store = XetStore(tmp_path)
    built = xorb([os.urandom(100_000) for _ in range(12)])  # 1.2 MB, in 128 KiB chunks at most
    assert store.put_xorb(built.hash, [built.body])
    assert store.has_xorb(built.hash)
    assert b"".join(store.read_chunk_data(built.hash, 0, len(built.chunks))) == b"".join(built.chunks)
    assert not [size for size in flushed if size >= BULK]
