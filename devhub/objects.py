"""Content-addressed file storage: regular blobs by git sha1, LFS objects by sha256.

Everything lands through a temporary file in the same folder tree and an `os.replace`, so a
crash never leaves a half-written object under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.fsutil import atomic_write_bytes
from shared.hashing import digest_file, git_blob_sha1


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=1, sort_keys=True).encode())


@dataclass(frozen=True)
class StagedFile:
    """A file streamed to a temporary path, with the hashes computed on the way."""

    path: Path
    size: int
    sha256: str


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.uploads = root / "uploads"
        for folder in (self.tmp, self.uploads, root / "lfs", root / "blobs"):
            folder.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # leftovers of a crash: never referenced
            stale.unlink(missing_ok=True)

    def lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256[:2] / sha256[2:4] / sha256

    def blob_path(self, sha1: str) -> Path:
        return self.root / "blobs" / sha1[:2] / sha1

    def has_lfs(self, sha256: str, size: int) -> bool:
        path = self.lfs_path(sha256)
        return path.is_file() and path.stat().st_size == size

    @staticmethod
    def damage_marker(path: Path) -> Path:
        """Written next to an object by the `corrupt` damage: its bytes no longer match its name.

        Hashing a large object on every batch call would be too slow, so the damage says so.
        """
        return path.with_name(path.name + ".damaged")

    def lfs_intact(self, sha256: str) -> bool:
        return not self.damage_marker(self.lfs_path(sha256)).exists()

    def put_blob(self, content: bytes) -> str:
        """Store a regular file's content (again, when the stored copy is damaged); its git sha1."""
        sha1 = git_blob_sha1(content)
        path = self.blob_path(sha1)
        marker = self.damage_marker(path)
        if not path.exists() or marker.exists():
            atomic_write_bytes(path, content)
            marker.unlink(missing_ok=True)
        return sha1

    def stage(self, chunks: Iterable[bytes]) -> StagedFile:
        """Stream chunks to a temporary file, hashing them; the caller adopts or discards it."""
        path = self.tmp / uuid.uuid4().hex
        sha256 = hashlib.sha256()
        size = 0
        try:
            with open(path, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    sha256.update(chunk)
                    size += len(chunk)
                # No fsync: devhub promises to survive `kill -9` and restarts, which the page
                # cache already gives, not power loss; a flush per object put this disk's
                # speed on the server's side of every upload a bench measures.
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedFile(path=path, size=size, sha256=sha256.hexdigest())

    def hash_in_place(self, path: Path) -> StagedFile:
        """A file already written where it lies (a multipart upload's object), hashed."""
        digest = digest_file(path)
        return StagedFile(path=path, size=digest.size, sha256=digest.sha256)

    def adopt_lfs(self, staged: StagedFile) -> Path:
        """Move a verified staged file to its content address."""
        final = self.lfs_path(staged.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)
        self.damage_marker(final).unlink(missing_ok=True)  # fresh verified bytes repair it
        return final

    def discard(self, staged: StagedFile) -> None:
        staged.path.unlink(missing_ok=True)

    def upload_dir(self, key: str) -> Path:
        path = self.uploads / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def drop_upload_dir(self, key: str) -> None:
        shutil.rmtree(self.uploads / key, ignore_errors=True)
