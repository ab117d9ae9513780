"""The write path: preupload (regular vs LFS) and the NDJSON commit endpoint."""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import logging
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote

from . import gitignore
from .app import PLURAL_TO_TYPE, App, Request, find_repo, repo_key, repo_url
from .auth import require_user
from .hashing import lfs_pointer_sha1
from .storage import COMMIT_ID_RE, Commit, Repo, TreeEntry, regular_entry
from .trees import preupload_oid
from .wire import BodyReader, HubError, Response, json_response
from .xet import committable_file, file_intact
from .yaml_check import validate_card

log = logging.getLogger(__name__)

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
README = "README.md"
GITIGNORE = ".gitignore"


# ---- preupload ----------------------------------------------------------------------


def lfs_patterns(app: App, commit: Commit) -> list[str]:
    """Patterns marked `filter=lfs` in the commit's .gitattributes."""
    entry = commit.tree.get(".gitattributes")
    if entry is None or entry.is_lfs:
        return []
    patterns = []
    for line in app.storage.read_regular(entry).decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def matches_gitattributes(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        target = path if "/" in pattern.strip("/") else name
        if fnmatchcase(target, pattern.lstrip("/")):
            return True
    return False


def looks_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return True
    return False


def upload_mode(path: str, size: int, sample: bytes, patterns: list[str]) -> str:
    if size == 0:
        return "regular"
    if size >= LFS_SIZE_THRESHOLD or matches_gitattributes(path, patterns) or looks_binary(sample):
        return "lfs"
    return "regular"


def preupload(app: App, req: Request, plural: str, ns: str, name: str, rev: str) -> Response:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], ns, name), write=True)
    head = app.storage.resolve(repo, unquote(rev))
    patterns = lfs_patterns(app, head)
    payload = req.body.json()
    ignore = gitignore.parse(_gitignore_text(app, head, payload.get("gitIgnore")))
    files = []
    for item in payload.get("files", []):
        path, size = str(item.get("path", "")), int(item.get("size", 0))
        try:
            sample = base64.b64decode(item.get("sample", ""))
        except (binascii.Error, ValueError) as err:
            raise HubError(400, f"Invalid base64 sample for {path}") from err
        existing = head.tree.get(path)
        files.append(
            {
                "path": path,
                "uploadMode": upload_mode(path, size, sample, patterns),
                "shouldIgnore": gitignore.is_ignored(ignore, path),
                "oid": preupload_oid(existing) if existing else None,
            }
        )
    return json_response({"files": files, "commitOid": head.id})


def _gitignore_text(app: App, head: Commit, sent: Any) -> str:
    """The rules preupload applies: the client's `gitIgnore` (a .gitignore it is committing)
    first, else the repo's own .gitignore, as the Hub does."""
    if isinstance(sent, str):
        return sent
    entry = head.tree.get(GITIGNORE)
    if entry is None or entry.is_lfs:
        return ""
    return app.storage.read_regular(entry).decode(errors="replace")


# ---- commit -------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    kind: str  # "file" | "lfsFile" | "deletedFile" | "deletedFolder"
    path: str
    entry: TreeEntry | None = None
    sha256: str | None = None
    size: int | None = None


LEADING_DOTDOT_RE = re.compile(r"^/*\.\.(?:[/\\]|$)")
STALE_PARENT_MESSAGE = (
    "The branch was updated since you opened this page. Please refresh and try again."
)


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path.strip("/"):
        raise HubError(400, f"Invalid path in commit: {path!r}")
    # The Hub answers 422 to a path that starts by climbing up, with either separator ("..\\x"
    # would leave a folder on Windows once downloaded); deeper backslashes are only characters
    # to it ("folder/..\\x" is accepted: clients refuse to write such a file).
    if LEADING_DOTDOT_RE.match(path):
        raise HubError(422, f"Invalid path in commit: {path!r} (it starts with '..')")
    parts = path.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in commit: {path!r}")
    return "/".join(parts)


def read_operations(app: App, body: BodyReader) -> tuple[dict[str, Any], list[Operation]]:
    """Parse the NDJSON body line by line; regular files go to the blob store as they come."""
    header: dict[str, Any] | None = None
    operations: list[Operation] = []
    while line := body.readline():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as err:
            raise HubError(400, f"Invalid NDJSON line in commit: {err}") from err
        if not isinstance(item, dict) or not isinstance(item.get("value", {}), dict):
            raise HubError(400, 'Each commit line must be {"key": ..., "value": {...}}')
        key, value = item.get("key"), item.get("value") or {}
        if key == "header":
            header = value
        elif key == "file":
            operations.append(_regular_file(app, value))
        elif key == "lfsFile":
            size = value.get("size")
            operations.append(
                Operation(
                    "lfsFile",
                    _check_path(value.get("path")),
                    sha256=str(value.get("oid")),
                    size=size,
                )
            )
        elif key in ("deletedFile", "deletedFolder"):
            operations.append(Operation(key, _check_path(value.get("path"))))
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")
    if header is None:
        raise HubError(400, "The commit has no header line")
    return header, operations


def _regular_file(app: App, value: dict[str, Any]) -> Operation:
    path = _check_path(value.get("path"))
    try:
        if value.get("encoding", "base64") == "base64":
            content = base64.b64decode(value.get("content", ""), validate=True)
        else:
            content = str(value.get("content", "")).encode()
    except (binascii.Error, ValueError) as err:
        raise HubError(400, f"Invalid base64 content for {path}") from err
    if path == README:
        result = validate_card(content.decode(errors="replace"))
        if result.errors:
            raise HubError(400, "Invalid metadata in README.md: " + "; ".join(result.errors))
    return Operation("file", path, entry=regular_entry(app.storage.objects, content))


def _apply(app: App, repo: Repo, tree: dict[str, TreeEntry], op: Operation) -> None:
    if op.kind == "file":
        assert op.entry is not None
        tree[op.path] = op.entry
    elif op.kind == "lfsFile":
        tree[op.path] = _lfs_entry(app, repo, op)
    elif op.kind == "deletedFile" and op.path in tree:
        del tree[op.path]
    else:
        # A deletedFile naming a folder deletes the folder, as on the Hub (`CommitOperationDelete`
        # of a path without a trailing "/" is sent as a file).
        doomed = [p for p in tree if p.startswith(op.path + "/")]
        if not doomed:
            kind = "file" if op.kind == "deletedFile" else "folder"
            raise HubError(
                404, f"A {kind} with this name doesn't exist: {op.path}", "EntryNotFound"
            )
        for path in doomed:
            del tree[path]


def _lfs_entry(app: App, repo: Repo, op: Operation) -> TreeEntry:
    """Only content this repo received may be committed: a known sha256 opens nothing else.

    Received means an LFS upload through this repo's batch tickets, or a Xet shard uploaded with
    this repo's write token declaring that sha256 (taken as declared, never re-hashed, as on the
    Hub). When both exist the Xet copy wins unless only the LFS copy is intact.
    """
    sha256 = op.sha256 or ""
    path = app.storage.objects.lfs_path(sha256) if len(sha256) == 64 else None
    size = (
        op.size
        if isinstance(op.size, int)
        else (path.stat().st_size if path and path.is_file() else -1)
    )
    lfs_ok = sha256 in repo.lfs_objects and app.storage.objects.has_lfs(sha256, size)
    xet_file = committable_file(app, repo, sha256, op.size) if len(sha256) == 64 else None
    if xet_file is not None and (
        not lfs_ok or file_intact(app, xet_file) or not app.storage.objects.lfs_intact(sha256)
    ):
        return TreeEntry(
            xet_file.size,
            lfs_pointer_sha1(sha256, xet_file.size),
            sha256,
            xet_hash=xet_file.file_hash,
        )
    if not lfs_ok:
        raise HubError(
            400,
            f"Your push was rejected because an LFS pointer pointed to a file that does not exist "
            f"in this repo: {op.path} (sha256 {sha256}). Upload it through the LFS batch API "
            f"or Xet first.",
        )
    return TreeEntry(size, lfs_pointer_sha1(sha256, size), sha256)


def post_commit(app: App, req: Request, plural: str, ns: str, name: str, rev: str) -> Response:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], ns, name), write=True)
    author = require_user(req.user).name
    if req.flag("create_pr"):
        raise HubError(400, "devhub does not support pull requests")
    branch = unquote(rev)
    if branch not in repo.refs:
        kind = "a commit id" if COMMIT_ID_RE.match(branch) else "an unknown branch"
        raise HubError(404, f"Cannot commit on {kind}: {branch}", "RevisionNotFound")
    header, operations = read_operations(app, req.body)
    with repo.lock:
        head = app.storage.resolve(repo, branch)
        parent = header.get("parentCommit")
        if parent and parent != head.id:
            raise HubError(412, STALE_PARENT_MESSAGE)
        tree = dict(head.tree)
        for op in operations:
            _apply(app, repo, tree, op)
        commit = app.storage.add_commit(
            repo,
            branch,
            author,
            str(header.get("summary") or ""),
            str(header.get("description") or ""),
            tree,
        )
    log.info(
        "commit %s on %s (%d operations) by %s",
        commit.id,
        repo.key.repo_id,
        len(operations),
        author,
    )
    return json_response(
        {
            "success": True,
            "commitOid": commit.id,
            "commitUrl": f"{repo_url(req, repo.key)}/commit/{commit.id}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }
    )
