"""How a commit's files look through the API: tree entries, folders, siblings, reported hashes.

A file damaged with `wrong_hash` is reported with deterministic wrong hashes everywhere the
client could read one (tree, paths-info, siblings, preupload oid, download ETag, `xetHash`).
The `X-Xet-Hash` of a download stays right: it is the address hf_xet fetches the content from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .hashing import damaged_sha1, damaged_sha256, git_tree_sha1, lfs_pointer, lfs_pointer_sha1
from .storage import Commit, TreeEntry


def reported_sha256(entry: TreeEntry) -> str | None:
    if entry.sha256 is None:
        return None
    return damaged_sha256(entry.sha256) if entry.damaged else entry.sha256


def reported_oid(entry: TreeEntry) -> str:
    """The git sha1 the API shows (for LFS: of the pointer to the reported sha256)."""
    sha256 = reported_sha256(entry)
    if sha256 is not None:
        return lfs_pointer_sha1(sha256, entry.size)
    return damaged_sha1(entry.oid) if entry.damaged else entry.oid


def reported_xet_hash(entry: TreeEntry) -> str | None:
    if entry.xet_hash is None:
        return None
    return damaged_sha256(entry.xet_hash) if entry.damaged else entry.xet_hash


def preupload_oid(entry: TreeEntry) -> str:
    """What the client compares with its local oid: sha256 for LFS files, git sha1 otherwise."""
    return reported_sha256(entry) or reported_oid(entry)


def etag(entry: TreeEntry) -> str:
    return reported_sha256(entry) or reported_oid(entry)


def file_json(path: str, entry: TreeEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "file",
        "path": path,
        "size": entry.size,
        "oid": reported_oid(entry),
    }
    sha256 = reported_sha256(entry)
    if sha256 is not None:
        out["lfs"] = {
            "oid": sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(sha256, entry.size)),
        }
    xet_hash = reported_xet_hash(entry)
    if xet_hash is not None:
        out["xetHash"] = xet_hash
    return out


def sibling_json(path: str, entry: TreeEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"rfilename": path, "size": entry.size, "blobId": reported_oid(entry)}
    sha256 = reported_sha256(entry)
    if sha256 is not None:
        out["lfs"] = {
            "size": entry.size,
            "sha256": sha256,
            "pointerSize": len(lfs_pointer(sha256, entry.size)),
        }
    return out


def folder_oids(commit: Commit) -> dict[str, str]:
    """Git tree sha1 of every folder of the commit ("" is the root)."""
    children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}
    for path, entry in commit.tree.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            children.setdefault("/".join(parts[:depth]), {})
        parent, _, name = path.rpartition("/")
        children[parent][name] = (False, reported_oid(entry))
    oids: dict[str, str] = {}
    for folder in sorted(children, key=_depth, reverse=True):  # deepest first
        oids[folder] = git_tree_sha1([(n, d, o) for n, (d, o) in children[folder].items()])
        if folder:
            parent, _, name = folder.rpartition("/")
            children[parent][name] = (True, oids[folder])
    return oids


def _depth(folder: str) -> int:
    return -1 if not folder else folder.count("/")


def folder_json(path: str, oid: str) -> dict[str, Any]:
    return {"type": "directory", "path": path, "size": 0, "oid": oid}


def list_tree(commit: Commit, base: str, recursive: bool) -> list[dict[str, Any]] | None:
    """Entries under folder `base` ("" for the root), or None when `base` is no folder."""
    oids = folder_oids(commit)
    base = base.strip("/")
    if base not in oids:
        return None
    prefix = f"{base}/" if base else ""
    out: list[dict[str, Any]] = []
    for folder, oid in oids.items():
        if folder and folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix) :]):
            out.append(folder_json(folder, oid))
    for path, entry in commit.tree.items():
        if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :]):
            out.append(file_json(path, entry))
    return sorted(out, key=lambda e: (e["type"] != "directory", e["path"]))


def paths_info(commit: Commit, paths: list[str]) -> list[dict[str, Any]]:
    oids: dict[str, str] | None = None
    out: list[dict[str, Any]] = []
    for raw in paths:
        path = raw.strip("/")
        if path in commit.tree:
            out.append(file_json(path, commit.tree[path]))
            continue
        oids = oids if oids is not None else folder_oids(commit)
        if path in oids and path:
            out.append(folder_json(path, oids[path]))
    return out


def _version(commit: Commit, path: str, folders: dict[str, str] | None) -> str | None:
    """What `path` is in `commit`: a file's oid, a folder's tree oid, or None when absent."""
    entry = commit.tree.get(path)
    if entry is not None:
        return reported_oid(entry)
    return folders.get(path) if folders is not None else None


def add_last_commits(history: Iterable[Commit], entries: list[dict[str, Any]]) -> None:
    """Set `lastCommit` (what `expand=True` adds) on tree / paths-info entries, in place.

    The last commit of a path is the newest one whose parent holds another version of it (or
    none). `history` runs from the listed commit back to the first one.
    """
    pending = {e["path"]: e for e in entries}
    needs_folders = any(e["type"] == "directory" for e in entries)
    newer: Commit | None = None
    newer_folders: dict[str, str] | None = None
    for commit in history:
        folders = folder_oids(commit) if needs_folders else None
        if newer is not None:
            for path in [
                p
                for p in pending
                if _version(commit, p, folders) != _version(newer, p, newer_folders)
            ]:
                pending.pop(path)["lastCommit"] = _commit_json(newer)
        if not pending:
            return
        newer, newer_folders = commit, folders
    for entry in pending.values():  # unchanged since the first commit
        if newer is not None:
            entry["lastCommit"] = _commit_json(newer)


def _commit_json(commit: Commit) -> dict[str, Any]:
    return {"id": commit.id, "title": commit.title, "date": commit.date}
