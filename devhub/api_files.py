"""File-level reads: tree listing, paths-info, commit history, and downloads through resolve."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, unquote

from .app import PLURAL_TO_TYPE, App, Request, find_repo, next_link, repo_key
from .storage import Commit, Repo, TreeEntry
from .trees import add_last_commits, etag, list_tree, paths_info
from .wire import FileBody, HubError, Response, StreamBody, json_response
from .xet import xet_headers

TREE_PAGE = 1000
COMMITS_PAGE = 50
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _repo_commit(
    app: App, req: Request, plural: str, ns: str, name: str, rev: str
) -> tuple[Repo, Commit]:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], ns, name))
    return repo, app.storage.resolve(repo, unquote(rev))


def tree(
    app: App, req: Request, plural: str, ns: str, name: str, rev: str, path: str | None = None
) -> Response:
    repo, commit = _repo_commit(app, req, plural, ns, name, rev)
    base = unquote(path or "")
    entries = list_tree(commit, base, recursive=req.flag("recursive"))
    if entries is None:
        raise HubError(
            404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit.id}
        )
    cursor = req.int_arg("cursor", 0)
    headers = (
        next_link(req, "cursor", cursor + TREE_PAGE) if cursor + TREE_PAGE < len(entries) else {}
    )
    page = entries[cursor : cursor + TREE_PAGE]
    if req.flag("expand"):
        add_last_commits(app.storage.history(repo, commit), page)
    return json_response(page, headers=headers)


def post_paths_info(app: App, req: Request, plural: str, ns: str, name: str, rev: str) -> Response:
    repo, commit = _repo_commit(app, req, plural, ns, name, rev)
    content_type = req.headers.get("Content-Type", "")
    raw = req.body.read_all()
    if "json" in content_type:
        form = json.loads(raw or b"{}")
        paths, expand = list(form.get("paths", [])), str(form.get("expand", ""))
    else:
        fields = parse_qs(raw.decode(), keep_blank_values=True)
        paths, expand = fields.get("paths", []), (fields.get("expand") or [""])[0]
    entries = paths_info(commit, paths)
    if expand.lower() in ("1", "true"):
        add_last_commits(app.storage.history(repo, commit), entries)
    return json_response(entries)


def list_commits(app: App, req: Request, plural: str, ns: str, name: str, rev: str) -> Response:
    repo, head = _repo_commit(app, req, plural, ns, name, rev)
    history = list(app.storage.history(repo, head))
    page = req.int_arg("p", 0)
    chunk = history[page * COMMITS_PAGE : (page + 1) * COMMITS_PAGE]
    items = [
        {
            "id": c.id,
            "authors": [{"user": c.author, "avatar": ""}],
            "date": c.date,
            "title": c.title,
            "message": c.message,
        }
        for c in chunk
    ]
    more = (page + 1) * COMMITS_PAGE < len(history)
    return json_response(items, headers=next_link(req, "p", page + 1) if more else {})


def resolve(
    app: App, req: Request, prefix: str | None, ns: str, name: str, rev: str, path: str
) -> Response:
    repo_type = {"datasets": "dataset", "spaces": "space"}.get(prefix or "", "model")
    repo = find_repo(app, req, repo_key(repo_type, ns, name))
    commit = app.storage.resolve(repo, unquote(rev))
    file_path = unquote(path)
    entry = commit.tree.get(file_path)
    if entry is None:
        raise HubError(
            404, f"Entry not found: {file_path}", "EntryNotFound", {"X-Repo-Commit": commit.id}
        )
    return _file_response(app, req, repo, commit, entry)


def _file_response(
    app: App, req: Request, repo: Repo, commit: Commit, entry: TreeEntry
) -> Response:
    tag = etag(entry)
    headers = {
        "X-Repo-Commit": commit.id,
        "ETag": f'"{tag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if entry.is_lfs:
        headers["X-Linked-Etag"] = f'"{tag}"'
        headers["X-Linked-Size"] = str(entry.size)
    start, end = 0, entry.size - 1
    status = 200
    requested = req.headers.get("Range")
    if requested and entry.size > 0:
        start, end = _parse_range(requested, entry.size)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    length = max(0, end - start + 1)
    if entry.xet_hash is not None:
        # hf_xet takes the X-Xet-Hash and fetches through the storage service; a client without
        # Xet reads the body, rebuilt from the xorbs chunk by chunk.
        headers.update(xet_headers(req, repo, commit.id, entry.xet_hash))
        xet_file = app.xet.get_file(entry.xet_hash)
        if xet_file is None:
            raise HubError(500, "Stored Xet file is missing")
        chunks = (
            app.xet.file_bytes(xet_file, start, start + length)
            if req.method != "HEAD"
            else iter(())
        )
        return Response(status, headers, stream=StreamBody(chunks, length))
    source = app.storage.content_path(entry)
    if not source.is_file():
        raise HubError(500, "Stored content is missing")
    return Response(status, headers, file=FileBody(source, start, length))


def _parse_range(header: str, size: int) -> tuple[int, int]:
    match = RANGE_RE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise HubError(
            416, f"Unsupported Range {header!r}", headers={"Content-Range": f"bytes */{size}"}
        )
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end
