"""Apply a `damage` fault to a repo's head: drop a file, make it report a wrong hash, or corrupt
its stored bytes.

`corrupt` flips bytes in what is stored (the LFS object, the regular blob, or one chunk of each
term of a Xet file's xorbs) without changing any size or listing, and leaves a "damaged" marker
next to it; the upload paths read the marker so that sending the content again repairs it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path

from shared.fsutil import atomic_write_bytes

from .faults import FaultRule
from .objects import ObjectStore
from .storage import RepoKey, Storage, TreeEntry
from .wire import HubError
from .xet_store import XetStore

log = logging.getLogger(__name__)


def apply_damage(storage: Storage, xet: XetStore, rule: FaultRule) -> list[str]:
    """Damage the files matching `rule.file` on the branch head; returns their paths."""
    assert rule.repo and rule.file
    namespace, _, name = rule.repo.partition("/")
    repo = storage.get(RepoKey(rule.repo_type, namespace, name))
    if repo is None:
        raise HubError(404, f"damage: repo {rule.repo} not found", "RepoNotFound")
    with repo.lock:
        head = storage.resolve(repo, rule.branch)
        paths = [p for p in head.tree if p == rule.file or fnmatchcase(p, rule.file)]
        if not paths:
            raise HubError(404, f"damage: {rule.file} not in {rule.repo}", "EntryNotFound")
        if rule.mode == "corrupt":
            for path in paths:
                _corrupt(storage, xet, path, head.tree[path])
        else:
            tree = dict(head.tree)
            for path in paths:
                if rule.mode == "drop":
                    del tree[path]
                else:
                    tree[path] = replace(tree[path], damaged=True)
            storage.rewrite_tree(repo, head, tree)
    log.info("fault %d damaged %s in %s (%s)", rule.id, paths, rule.repo, rule.mode)
    return paths


def _corrupt(storage: Storage, xet: XetStore, path: str, entry: TreeEntry) -> None:
    if entry.size == 0:
        raise HubError(400, f"damage: {path} is empty, there is no byte to corrupt")
    if entry.xet_hash is not None:
        xet_file = xet.get_file(entry.xet_hash)
        if xet_file is None:
            raise HubError(500, f"damage: the Xet file of {path} is not stored")
        for term in xet_file.terms:
            xet.corrupt_chunk(term.xorb, term.chunk_start)
        return
    _flip_file(storage.content_path(entry))


def _flip_file(path: Path) -> None:
    with open(path, "r+b") as f:
        middle = os.fstat(f.fileno()).st_size // 2
        f.seek(middle)
        byte = f.read(1)
        f.seek(middle)
        f.write(bytes([byte[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
    atomic_write_bytes(ObjectStore.damage_marker(path), b"corrupt\n")
