"""Verification: the remote copy at the new commit holds exactly the bytes we hashed locally.

Two levels, both from one paths-info read at the commit: `committed` (every file listed with our
size) and `verified` (every file's hash, as the Hub derived it from the bytes it received, equals
ours). Only `verified` copies are ever pruned.

Sizes always; the content sha256 for LFS files and the git blob sha1 for regular files, which is
what the Hub reports for each. Both hashes come from the one read `shared.hashing.digest_file`
made before the upload, so no byte is read twice (files the Hub always stores as LFS get no sha1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from uploader.errors import VerificationError

if TYPE_CHECKING:
    from uploader.hub import HubClient, LocalFile, RemoteFile

# A summary names this many problems; the rest are counted, so the message stays one line.
MAX_PROBLEMS_SHOWN = 5
SHORT_HASH = 12


def compare(expected: Sequence[LocalFile], remote: Mapping[str, RemoteFile]) -> list[str]:
    """Human-readable problems, one per mismatching file; empty means verified.

    Extra remote files (`.gitattributes`, older uploads) are not problems.
    """
    return listing_problems(expected, remote) + content_problems(expected, remote)


def listing_problems(expected: Sequence[LocalFile], remote: Mapping[str, RemoteFile]
                     ) -> list[str]:
    """The `committed` level: every file is listed at the commit, with our size."""
    problems: list[str] = []
    for local in expected:
        path, digest = local.path_in_repo, local.digest
        found = remote.get(path)
        if found is None:
            problems.append(f"{path}: missing on the Hub")
        elif found.size != digest.size:
            problems.append(f"{path}: size {found.size} on the Hub, {digest.size} locally")
    return problems


def content_problems(expected: Sequence[LocalFile], remote: Mapping[str, RemoteFile]
                     ) -> list[str]:
    """The `verified` level: each listed file's hash, as the Hub derived it from the bytes it
    received (git sha1 of a regular file; the sha256 hf_xet or the LFS server computed), equals
    ours. Files the listing check already flagged are not reported twice."""
    problems: list[str] = []
    for local in expected:
        path, digest = local.path_in_repo, local.digest
        found = remote.get(path)
        if found is None or found.size != digest.size:
            continue
        if found.is_lfs:
            if found.sha256 != digest.sha256:
                problems.append(_hash_problem(path, "sha256", found.sha256, digest.sha256))
        elif digest.git_sha1 is None:
            problems.append(f"{path}: stored as a regular file; a file of {digest.size} bytes "
                            "is always LFS on the Hub")
        elif found.git_sha1 != digest.git_sha1:
            problems.append(_hash_problem(path, "git sha1", found.git_sha1, digest.git_sha1))
    return problems


def _hash_problem(path: str, kind: str, remote: str | None, local: str) -> str:
    shown = remote[:SHORT_HASH] if remote else "none"
    return f"{path}: {kind} {shown} on the Hub, {local[:SHORT_HASH]} locally"


def remote_listing(hub: HubClient, repo_id: str, commit_sha: str,
                   expected: Sequence[LocalFile]) -> Mapping[str, RemoteFile]:
    """paths-info at `commit_sha` (not the moving head) for every expected file."""
    return hub.paths_info(repo_id, commit_sha, [f.path_in_repo for f in expected])


def check(repo_id: str, commit_sha: str, expected: Sequence[LocalFile],
          problems: Sequence[str]) -> None:
    """Raises VerificationError with a one-line summary naming the files that differ."""
    if not problems:
        return
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        shown += f"; and {more} more"
    raise VerificationError(
        f"{repo_id}@{commit_sha[:SHORT_HASH]}: {len(problems)} of {len(expected)} files do not "
        f"match: {shown}",
        "the checkpoint is uploaded again; if this repeats, check the staging disk",
    )


def verify_commit(hub: HubClient, repo_id: str, commit_sha: str,
                  expected: Sequence[LocalFile]) -> None:
    """Both levels at once (listing, then content), for re-verification of a landed copy."""
    remote = remote_listing(hub, repo_id, commit_sha, expected)
    check(repo_id, commit_sha, expected, compare(expected, remote))
