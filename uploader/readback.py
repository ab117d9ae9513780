"""Read-back: download each file of a remote copy at its commit and hash the bytes.

The only check independent of the client that uploaded: `verify --deep`, `--prune-check deep`
and the proof that a repair worked all end here. One file is on disk at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.hashing import digest_file

if TYPE_CHECKING:
    from uploader.hub import HubClient

SHORT_HASH = 12


@dataclass(frozen=True)
class Wanted:
    """A file the remote copy must hold: its size and sha256, and the git sha1 when known."""

    path: str
    size: int
    sha256: str
    git_sha1: str | None = None


def read_back(hub: HubClient, repo_id: str, revision: str, wanted: Sequence[Wanted],
              scratch: Path) -> list[str]:
    """One problem per file whose downloaded bytes differ from `wanted`; empty when all match."""
    problems = []
    scratch.mkdir(parents=True, exist_ok=True)
    for want in wanted:
        local = hub.download(repo_id, revision, want.path, scratch)
        try:
            digest = digest_file(local)
        finally:
            local.unlink(missing_ok=True)
        if (digest.size, digest.sha256) != (want.size, want.sha256):
            problems.append(f"{want.path}: downloaded bytes have sha256 "
                            f"{digest.sha256[:SHORT_HASH]}, {want.sha256[:SHORT_HASH]} expected")
        elif want.git_sha1 is not None and digest.git_sha1 is not None \
                and want.git_sha1 != digest.git_sha1:
            problems.append(f"{want.path}: git sha1 {want.git_sha1[:SHORT_HASH]} on the Hub, "
                            f"{digest.git_sha1[:SHORT_HASH]} for its bytes")
    return problems
