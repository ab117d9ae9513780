"""Hashes the Hub reports: git blob sha1 for regular files, sha256 and pointer sha1 for LFS files."""

from __future__ import annotations

import hashlib

from shared.hashing import git_blob_sha1

LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores in place of an LFS object."""
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_pointer_sha1(sha256: str, size: int) -> str:
    """The git object id of an LFS file: the blob sha1 of its pointer file."""
    return git_blob_sha1(lfs_pointer(sha256, size))


def git_tree_sha1(entries: list[tuple[str, bool, str]]) -> str:
    """Git tree object id from `(name, is_directory, child_sha1)` entries, sorted as git sorts them."""
    body = bytearray()
    for name, is_dir, child in sorted(entries, key=lambda e: e[0] + ("/" if e[1] else "")):
        mode = b"40000" if is_dir else b"100644"
        body += mode + b" " + name.encode() + b"\0" + bytes.fromhex(child)
    digest = hashlib.sha1(b"tree %d\0" % len(body))
    digest.update(body)
    return digest.hexdigest()


def damaged_sha256(sha256: str) -> str:
    """A deterministic wrong sha256, reported for a file damaged with `wrong_hash`."""
    return hashlib.sha256(b"devhub-damaged:" + sha256.encode()).hexdigest()


def damaged_sha1(sha1: str) -> str:
    """A deterministic wrong git sha1, reported for a regular file damaged with `wrong_hash`."""
    return hashlib.sha1(b"devhub-damaged:" + sha1.encode()).hexdigest()
