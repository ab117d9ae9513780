"""Repos, branches and commits on disk, under `<data-dir>/repos/<type>s/<namespace>/<name>/`.

Each repo folder holds `repo.json` (visibility, refs, the LFS objects this repo received) and
`commits/<id>.json` (one per commit, with its whole file tree). Every write is atomic and every
change to a repo happens under that repo's lock, so concurrent commits serialize cleanly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .objects import ObjectStore, atomic_write_json
from .wire import HubError

log = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
SYSTEM_AUTHOR = "system"
# The Hub's name rule (huggingface_hub's REPO_ID_REGEX): word characters, "-" and ".", at most 96,
# neither starting nor ending with "-" or "."; "_" may start a name (`__DUMMY_HUB_USER__`).
NAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
COMMIT_ID_RE = re.compile(r"^[0-9a-f]{40}$")

# The .gitattributes the Hub puts in every new repo's initial commit.
# fmt: off
_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
]
# fmt: on
DEFAULT_GITATTRIBUTES = "".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERNS
).encode()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class RepoKey:
    repo_type: str
    namespace: str
    name: str

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def folded(self) -> RepoKey:
        """The lookup key: repo ids are case-insensitive on the Hub (the stored case is kept)."""
        return RepoKey(self.repo_type, self.namespace.lower(), self.name.lower())

    def validate(self) -> RepoKey:
        if self.repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {self.repo_type!r}")
        for part in (self.namespace, self.name):
            if not NAME_RE.match(part) or ".." in part or "--" in part:
                raise HubError(400, f"Invalid repo name {self.repo_id!r}")
        return self


@dataclass(frozen=True)
class TreeEntry:
    """One file of a commit. `oid` is the git sha1 (of the pointer file for LFS files).

    `xet_hash` is set for a file stored in Xet (its `sha256` is then the one the client declared).
    """

    size: int
    oid: str
    sha256: str | None = None
    damaged: bool = False
    xet_hash: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "oid": self.oid}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        if self.damaged:
            out["damaged"] = True
        if self.xet_hash is not None:
            out["xet_hash"] = self.xet_hash
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TreeEntry:
        return cls(
            raw["size"],
            raw["oid"],
            raw.get("sha256"),
            bool(raw.get("damaged", False)),
            raw.get("xet_hash"),
        )


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    author: str
    date: str
    title: str
    message: str
    tree: dict[str, TreeEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "author": self.author,
            "date": self.date,
            "title": self.title,
            "message": self.message,
            "tree": {path: entry.to_json() for path, entry in sorted(self.tree.items())},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Commit:
        tree = {path: TreeEntry.from_json(e) for path, e in raw["tree"].items()}
        return cls(
            raw["id"], raw["parent"], raw["author"], raw["date"], raw["title"], raw["message"], tree
        )


@dataclass
class Repo:
    key: RepoKey
    private: bool
    created_at: str
    refs: dict[str, str]
    lfs_objects: set[str]
    folder: Path
    # Xet file hash -> the sha256 its shard declared (None if the client skipped it), in the order
    # they were received: a commit takes the newest file declaring its sha256.
    xet_files: dict[str, str | None] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    commits: dict[str, Commit] = field(default_factory=dict, repr=False)
    deleted: bool = False

    def check_live(self) -> None:
        """Writers hold the lock and call this: a repo deleted meanwhile takes no more writes."""
        if self.deleted:
            raise HubError(404, f"Repository {self.key.repo_id} was deleted", "RepoNotFound")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.key.repo_type,
            "namespace": self.key.namespace,
            "name": self.key.name,
            "private": self.private,
            "created_at": self.created_at,
            "refs": self.refs,
            "lfs_objects": sorted(self.lfs_objects),
            "xet_files": [[k, v] for k, v in self.xet_files.items()],
        }


class Storage:
    """All repos of a data dir, loaded at start and written through on every change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = ObjectStore(root / "objects")
        self.repos_dir = root / "repos"
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._creating: set[RepoKey] = set()
        self._repos: dict[RepoKey, Repo] = {}  # by folded key
        for meta in self.repos_dir.glob("*/*/*/repo.json"):
            repo = self._load_repo(meta)
            self._repos[repo.key.folded()] = repo
        log.info("loaded %d repos from %s", len(self._repos), root)

    def _load_repo(self, meta: Path) -> Repo:
        raw = json.loads(meta.read_text())
        key = RepoKey(raw["type"], raw["namespace"], raw["name"])
        return Repo(
            key,
            raw["private"],
            raw["created_at"],
            raw["refs"],
            set(raw["lfs_objects"]),
            meta.parent,
            dict(raw.get("xet_files", [])),
        )

    def _folder(self, key: RepoKey) -> Path:
        return self.repos_dir / f"{key.repo_type}s" / key.namespace / key.name

    def get(self, key: RepoKey) -> Repo | None:
        """The repo whatever the case of `key`; its `key` has the case it was created with."""
        with self._lock:
            return self._repos.get(key.folded())

    def all_repos(self) -> list[Repo]:
        with self._lock:
            return sorted(self._repos.values(), key=lambda r: (r.key.repo_type, r.key.repo_id))

    def create_repo(self, key: RepoKey, private: bool) -> Repo | None:
        """The new repo with its initial commit, or None when it already exists."""
        # The repo is published only once its initial commit exists: a listing or a resolve of
        # `main` racing with the creation must never see a repo without a head.
        folded = key.folded()
        with self._lock:
            if folded in self._repos or folded in self._creating:
                return None
            self._creating.add(folded)
        try:
            repo = Repo(key, private, now_iso(), {}, set(), self._folder(key))
            with repo.lock:
                oid = self.objects.put_blob(DEFAULT_GITATTRIBUTES)
                tree = {".gitattributes": TreeEntry(len(DEFAULT_GITATTRIBUTES), oid)}
                self.add_commit(repo, DEFAULT_BRANCH, SYSTEM_AUTHOR, "initial commit", "", tree)
            with self._lock:
                self._repos[folded] = repo
        finally:
            with self._lock:
                self._creating.discard(folded)
        return repo

    def delete_repo(self, key: RepoKey) -> None:
        with self._lock:
            repo = self._repos.pop(key.folded())
        with repo.lock:
            repo.deleted = True
            trash = self.root / "trash" / uuid.uuid4().hex
            trash.parent.mkdir(parents=True, exist_ok=True)
            repo.folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def save(self, repo: Repo) -> None:
        repo.check_live()
        atomic_write_json(repo.folder / "repo.json", repo.to_json())

    def add_commit(
        self,
        repo: Repo,
        branch: str,
        author: str,
        title: str,
        message: str,
        tree: dict[str, TreeEntry],
    ) -> Commit:
        """Write a commit on top of `branch` and move the branch to it (caller holds repo.lock)."""
        repo.check_live()
        parent = repo.refs.get(branch)
        date = now_iso()
        seed = json.dumps([parent, author, date, title, message, uuid.uuid4().hex])
        commit_id = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(commit_id, parent, author, date, title, message, dict(tree))
        self._write_commit(repo, commit)
        repo.refs[branch] = commit_id
        self.save(repo)
        return commit

    def _write_commit(self, repo: Repo, commit: Commit) -> None:
        atomic_write_json(repo.folder / "commits" / f"{commit.id}.json", commit.to_json())
        repo.commits[commit.id] = commit

    def rewrite_tree(self, repo: Repo, commit: Commit, tree: dict[str, TreeEntry]) -> Commit:
        """Replace a commit's tree in place: models damage to a stored copy (caller holds lock)."""
        repo.check_live()
        damaged = replace(commit, tree=dict(tree))
        self._write_commit(repo, damaged)
        return damaged

    def load_commit(self, repo: Repo, commit_id: str) -> Commit | None:
        commit = repo.commits.get(commit_id)
        if commit is None:
            path = repo.folder / "commits" / f"{commit_id}.json"
            if not COMMIT_ID_RE.match(commit_id) or not path.is_file():
                return None
            commit = Commit.from_json(json.loads(path.read_text()))
            repo.commits[commit_id] = commit
        return commit

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """A branch name or a commit id of this repo -> commit; else 404 RevisionNotFound."""
        commit_id = repo.refs.get(revision, revision)
        commit = self.load_commit(repo, commit_id)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def history(self, repo: Repo, commit: Commit) -> Iterator[Commit]:
        current: Commit | None = commit
        while current is not None:
            yield current
            current = self.load_commit(repo, current.parent) if current.parent else None

    def grant_lfs(self, repo: Repo, sha256: str) -> None:
        """Record that this repo received the LFS object (so it may commit pointers to it)."""
        with repo.lock:
            repo.check_live()
            if sha256 not in repo.lfs_objects:
                repo.lfs_objects.add(sha256)
                self.save(repo)

    def grant_xet(self, repo: Repo, files: list[tuple[str, str | None]]) -> None:
        """Record that this repo received these Xet files `(file hash, declared sha256)`, from a
        shard uploaded with its token; one write for the whole shard."""
        with repo.lock:
            repo.check_live()
            for file_hash, sha256 in files:
                repo.xet_files.pop(file_hash, None)  # re-inserted last: the newest wins
                repo.xet_files[file_hash] = sha256
            self.save(repo)

    def read_regular(self, entry: TreeEntry) -> bytes:
        return self.objects.blob_path(entry.oid).read_bytes()

    def content_path(self, entry: TreeEntry) -> Path:
        if entry.sha256 is not None:
            return self.objects.lfs_path(entry.sha256)
        return self.objects.blob_path(entry.oid)


def regular_entry(objects: ObjectStore, content: bytes) -> TreeEntry:
    return TreeEntry(len(content), objects.put_blob(content))
