"""Xet, as the Hub serves it: token endpoints on the Hub side, the storage service (CAS) behind
`casUrl`, and what commits, listings and downloads need from it.

The storage service lives under `{base}{STORAGE_PREFIX}/{nonce}` (the `casUrl`), where the nonce
is per data dir. Its requests carry a Xet token instead of the Hub token: the server skips Hub
authentication for every path under STORAGE_PREFIX and each handler here checks the Xet token.

    GET  /api/{type}s/{ns}/{name}/xet-write-token/{rev}   Hub token with write access
    GET  /api/{type}s/{ns}/{name}/xet-read-token/{rev}    Hub token with read access
    GET  {cas}/v1/chunks/{prefix}/{hash}                  global dedup: always 404 (unknown)
    POST {cas}/v1/xorbs/{prefix}/{hash}                   xorb upload (grants: 404 -> this)
    POST {cas}/v1/shards                                  shard upload (/v2/shards: 404 -> this)
    GET  {cas}/v1/reconstructions/{file_hash}             reconstruction (/v2: 404 -> this)
    GET  {cas}/fetch/{xorb}/{exp}/{sig}                   signed, unauthenticated range reads
    POST {cas}/v1/telemetry                               accepted and dropped
"""

from __future__ import annotations

import logging
import time

from . import xet_auth, xet_format
from .app import PLURAL_TO_TYPE, App, Request, find_repo, repo_key
from .storage import Repo
from .wire import FileBody, HubError, Response, json_response
from .xet_format import FileEntry, FormatError, parse_shard

log = logging.getLogger(__name__)

STORAGE_PREFIX = "/_xet"
MAX_SHARD_BYTES = 128 * 1024 * 1024
HEX64 = r"([0-9a-f]{64})"


def is_storage(path: str) -> bool:
    return path.startswith(STORAGE_PREFIX + "/")


def cas_url(app: App, req: Request) -> str:
    return f"{req.base_url}{STORAGE_PREFIX}/{app.xet.nonce}"


def _require_xet(app: App) -> None:
    if not app.config.xet:
        raise HubError(404, "Xet storage is off on this server (started with --no-xet)")


# ---- Hub side: tokens -------------------------------------------------------------------


def _token_response(app: App, req: Request, repo: Repo, scope: str) -> Response:
    exp = int(time.time()) + app.config.xet_token_ttl
    token = xet_auth.XetToken(repo.key, scope, req.user.name if req.user else None, exp)
    access = token.encode(app.secret)
    url = cas_url(app, req)
    headers = {
        "X-Xet-Cas-Url": url,
        "X-Xet-Access-Token": access,
        "X-Xet-Token-Expiration": str(exp),
    }
    return json_response({"accessToken": access, "exp": exp, "casUrl": url}, headers=headers)


def write_token(app: App, req: Request, plural: str, ns: str, name: str, rev: str) -> Response:
    _require_xet(app)
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], ns, name), write=True)
    return _token_response(app, req, repo, xet_auth.WRITE)


def read_token(app: App, req: Request, plural: str, ns: str, name: str, rev: str) -> Response:
    _require_xet(app)
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], ns, name))
    return _token_response(app, req, repo, xet_auth.READ)


# ---- storage side ---------------------------------------------------------------------------


def _storage(app: App, req: Request, nonce: str, scope: str) -> tuple[xet_auth.XetToken, Repo]:
    """The token's grant and repo; 404 for another data dir's casUrl or with --no-xet."""
    _require_xet(app)
    if nonce != app.xet.nonce:
        raise HubError(404, "Unknown Xet storage (this casUrl belongs to another devhub data dir)")
    token = xet_auth.check(app.secret, req.headers.get("Authorization"), scope)
    repo = app.storage.get(token.key)
    if repo is None:
        raise HubError(404, f"Repository {token.key.repo_id} not found", "RepoNotFound")
    return token, repo


def dedup_query(app: App, req: Request, nonce: str, prefix: str, chunk: str) -> Response:
    # Unknown is always a correct answer: the client then uploads the chunk itself. It also means
    # no chunk of a damaged xorb is ever offered for dedup.
    _storage(app, req, nonce, xet_auth.READ)
    raise HubError(404, f"Chunk {chunk} is not known for deduplication")


def upload_xorb(app: App, req: Request, nonce: str, prefix: str, xorb: str) -> Response:
    _storage(app, req, nonce, xet_auth.WRITE)
    try:
        inserted = app.xet.put_xorb(xorb, req.body.chunks())
    except FormatError as err:
        raise HubError(400, f"Invalid xorb {xorb}: {err}") from err
    return json_response({"was_inserted": inserted})


def upload_shard(app: App, req: Request, nonce: str) -> Response:
    _, repo = _storage(app, req, nonce, xet_auth.WRITE)
    data = req.body.read_all(limit=MAX_SHARD_BYTES)
    try:
        shard = parse_shard(data)
    except FormatError as err:
        raise HubError(400, f"Invalid shard: {err}") from err
    for info in shard.xorbs:
        if not app.xet.has_xorb(info.xorb):
            raise HubError(400, f"Shard lists xorb {info.xorb}, which was never uploaded")
    for entry in shard.files:
        _check_terms(app, entry)
    new = app.xet.put_shard(data)
    for entry in shard.files:
        app.xet.put_file(entry)
    app.storage.grant_xet(repo, [(entry.file_hash, entry.sha256) for entry in shard.files])
    log.info(
        "shard with %d files, %d xorbs received by %s",
        len(shard.files),
        len(shard.xorbs),
        repo.key.repo_id,
    )
    return json_response({"result": 1 if new else 0})


def _check_terms(app: App, entry: FileEntry) -> None:
    """Every term within a received xorb, and the file hash that of the chunks its terms name."""
    chunks: list[tuple[bytes, int]] = []
    for term in entry.terms:
        if not app.xet.has_xorb(term.xorb):
            raise HubError(
                400, f"File {entry.file_hash} references xorb {term.xorb}, which was never uploaded"
            )
        index = app.xet.index(term.xorb)
        if term.chunk_end > len(index.sizes):
            raise HubError(400, f"File {entry.file_hash}: chunk range beyond xorb {term.xorb}")
        if sum(index.sizes[term.chunk_start : term.chunk_end]) != term.unpacked:
            raise HubError(
                400, f"File {entry.file_hash}: term size does not match xorb {term.xorb}"
            )
        for i in range(term.chunk_start, term.chunk_end):
            chunks.append((xet_format.hash_from_hex(index.hashes[i]), index.sizes[i]))
    computed = xet_format.hash_hex(xet_format.file_hash(chunks))
    if computed != entry.file_hash:
        raise HubError(400, f"File {entry.file_hash}: its chunks hash to {computed}")


def reconstruction(app: App, req: Request, nonce: str, file_hash: str) -> Response:
    token, repo = _storage(app, req, nonce, xet_auth.READ)
    entry = app.xet.get_file(file_hash) if file_hash in repo.xet_files else None
    if entry is None:
        raise HubError(404, f"File {file_hash} not found in {repo.key.repo_id}")
    start, end = 0, entry.size - 1
    requested = req.headers.get("Range")
    if requested:
        start, end = _range(requested, entry.size)
    log.debug("reconstruction of %s, bytes %d-%d", file_hash, start, end)
    terms: list[dict] = []
    wanted: dict[str, list[tuple[int, int]]] = {}
    pos, offset = 0, None
    for term in entry.terms:
        term_end = pos + term.unpacked
        if term_end > start and pos <= end:
            if offset is None:
                offset = start - pos
            terms.append(
                {
                    "hash": term.xorb,
                    "unpacked_length": term.unpacked,
                    "range": {"start": term.chunk_start, "end": term.chunk_end},
                }
            )
            wanted.setdefault(term.xorb, []).append((term.chunk_start, term.chunk_end))
        pos = term_end
    fetch_info = {
        xorb: _fetch_entries(app, req, xorb, ranges, token.exp) for xorb, ranges in wanted.items()
    }
    return json_response(
        {"offset_into_first_range": offset or 0, "terms": terms, "fetch_info": fetch_info}
    )


def _fetch_entries(
    app: App, req: Request, xorb: str, ranges: list[tuple[int, int]], exp: int
) -> list[dict]:
    """One signed URL per run of chunks: overlapping or touching term ranges are merged, since
    hf_xet looks a term up in the single fetch entry that contains it."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    index = app.xet.index(xorb)
    sig = xet_auth.sign_fetch(app.secret, xorb, exp)
    url = f"{cas_url(app, req)}/fetch/{xorb}/{exp}/{sig}"
    out = []
    for lo, hi in merged:
        first, last = index.byte_range(lo, hi)
        out.append(
            {
                "range": {"start": lo, "end": hi},
                "url": url,
                "url_range": {"start": first, "end": last},
            }
        )
    return out


def _range(header: str, size: int) -> tuple[int, int]:
    first, sep, last = header.strip().removeprefix("bytes=").partition("-")
    if not sep or not first.isdigit() or (last and not last.isdigit()):
        raise HubError(400, f"Unsupported Range {header!r}")
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def fetch_xorb(app: App, req: Request, nonce: str, xorb: str, exp: str, sig: str) -> Response:
    """A presigned-URL read: no Authorization, the signature and expiry are in the path."""
    _require_xet(app)
    if nonce != app.xet.nonce:
        raise HubError(404, "Unknown Xet storage")
    xet_auth.check_fetch(app.secret, xorb, exp, sig)
    if not app.xet.has_xorb(xorb):
        raise HubError(404, f"Xorb {xorb} not found")
    path = app.xet.xorb_path(xorb)
    size = path.stat().st_size
    requested = req.headers.get("Range")
    if not requested:
        return Response(
            200, {"Content-Type": "application/octet-stream"}, file=FileBody(path, 0, size)
        )
    start, end = _range(requested, size)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Range": f"bytes {start}-{end}/{size}",
    }
    return Response(206, headers, file=FileBody(path, start, end - start + 1))


def telemetry(app: App, req: Request, nonce: str) -> Response:
    req.body.drain()
    return json_response({})


# ---- Hub side: commits ---------------------------------------------------------------------


def committable_file(app: App, repo: Repo, sha256: str, size: object) -> FileEntry | None:
    """The newest file this repo received in a shard with that declared sha256 (and size).

    The sha256 is the client's claim, never re-hashed, as on the Hub. A file whose xorbs are
    known to be damaged is returned only if nothing better is available (see commit.py).
    """
    for file_hash, declared in reversed(list(repo.xet_files.items())):
        if declared != sha256:
            continue
        entry = app.xet.get_file(file_hash)
        if entry is not None and (not isinstance(size, int) or entry.size == size):
            return entry
    return None


def file_intact(app: App, entry: FileEntry) -> bool:
    return all(app.xet.xorb_intact(t.xorb) for t in entry.terms)


def xet_headers(req: Request, repo: Repo, commit_id: str, xet_hash: str) -> dict[str, str]:
    """What a resolve of a Xet file adds: the hash and where hf_xet gets its read token."""
    refresh = (
        f"{req.base_url}/api/{repo.key.repo_type}s/{repo.key.repo_id}/xet-read-token/{commit_id}"
    )
    return {"X-Xet-Hash": xet_hash, "Link": f'<{refresh}>; rel="xet-auth"'}
