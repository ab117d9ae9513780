"""Content hashes as the Hub reports them: sha256 for LFS files, git blob sha1 for the rest.

Both come out of one read of the file, so the uploader hashes each byte once and reuses the
result for the upload, the manifest and the verification. Files of `LFS_ONLY_SIZE` and more are
always stored as LFS/Xet objects, whose listings carry the sha256 alone: their git sha1 is not
computed (it would double the hashing cost of the bytes that matter most).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

CHUNK_SIZE = 1024 * 1024
# The Hub's threshold: a file this large is LFS (Xet) whatever its content or .gitattributes.
LFS_ONLY_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    git_sha1: str | None  # None for files of LFS_ONLY_SIZE and more


def digest_file(path: Path, chunk_size: int = CHUNK_SIZE) -> FileDigest:
    """sha256 and git blob sha1 of a file, read once.

    The git header needs the size up front; it is taken from fstat of the open file and checked
    against the bytes actually read, so a file that grows or shrinks under us raises instead of
    producing a digest that matches neither version.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(b"blob %d\0" % size) if size < LFS_ONLY_SIZE else None
        read = 0
        while chunk := fh.read(chunk_size):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
            read += len(chunk)
    if read != size:
        raise FileChangedError(f"{path} changed size while it was hashed ({size} -> {read} bytes)")
    return FileDigest(size=size, sha256=sha256.hexdigest(),
                      git_sha1=sha1.hexdigest() if sha1 is not None else None)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileChangedError(OSError):
    """A file changed while it was being read."""


def digest_bytes(data: bytes) -> FileDigest:
    return FileDigest(size=len(data), sha256=sha256_bytes(data), git_sha1=git_blob_sha1(data))
