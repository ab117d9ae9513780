"""Git LFS over HTTP as the client uses it: batch, basic PUT, multipart parts + completion, verify.

Upload URLs are called without credentials, so each one carries a ticket: the repo, oid, size
and chunk size, signed with the server's secret. A ticket is only good for that one object in
that one repo, and stays valid across restarts. An object counts as received by a repo only
once its bytes arrived through that repo's ticket and hashed to the announced sha256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import re
from dataclasses import dataclass

from .app import App, Request, find_repo, repo_key
from .objects import StagedFile
from .storage import Repo, RepoKey
from .wire import HubError, Response, json_response

log = logging.getLogger(__name__)

LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
OBJECT_FILE = "object"  # in a multipart upload's folder: the parts, each at its own offset


@dataclass(frozen=True)
class Ticket:
    key: RepoKey
    oid: str
    size: int
    chunk_size: int  # 0 for a basic (single PUT) upload

    @property
    def parts(self) -> int:
        return math.ceil(self.size / self.chunk_size) if self.chunk_size else 1

    def encode(self, secret: bytes) -> str:
        payload = json.dumps(
            [
                self.key.repo_type,
                self.key.namespace,
                self.key.name,
                self.oid,
                self.size,
                self.chunk_size,
            ]
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{_sign(secret, body)}"

    @classmethod
    def decode(cls, secret: bytes, text: str) -> Ticket:
        body, _, sig = text.partition(".")
        if not hmac.compare_digest(sig, _sign(secret, body)):
            raise HubError(403, "Invalid or expired upload URL")
        raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return cls(RepoKey(raw[0], raw[1], raw[2]), raw[3], raw[4], raw[5])

    @property
    def upload_key(self) -> str:
        text = f"{self.key.repo_type}/{self.key.repo_id}/{self.oid}/{self.size}/{self.chunk_size}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]


def _sign(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:40]


def lfs_json(payload: object, status: int = 200) -> Response:
    response = json_response(payload, status)
    response.headers["Content-Type"] = LFS_CONTENT_TYPE
    return response


def batch(app: App, req: Request, plural_prefix: str | None, namespace: str, name: str) -> Response:
    repo_type = {"datasets": "dataset", "spaces": "space"}.get(plural_prefix or "", "model")
    key = repo_key(repo_type, namespace, name)
    payload = req.body.json()
    if payload.get("operation") != "upload":
        raise HubError(400, "devhub only serves the LFS 'upload' operation")
    repo = find_repo(app, req, key, write=True)
    multipart = "multipart" in (payload.get("transfers") or ["basic"])
    objects = [_batch_object(app, req, repo, obj, multipart) for obj in payload.get("objects", [])]
    transfer = "multipart" if multipart else "basic"
    return lfs_json({"transfer": transfer, "objects": objects, "hash_algo": "sha256"})


def _batch_object(app: App, req: Request, repo: Repo, obj: dict, multipart: bool) -> dict:
    oid, size = obj.get("oid"), obj.get("size")
    if (
        not isinstance(oid, str)
        or not SHA256_RE.match(oid)
        or not isinstance(size, int)
        or size < 0
    ):
        return {
            "oid": str(oid),
            "size": size if isinstance(size, int) else 0,
            "error": {"code": 422, "message": "oid must be a sha256 and size an integer >= 0"},
        }
    objects = app.storage.objects
    if oid in repo.lfs_objects and objects.has_lfs(oid, size) and objects.lfs_intact(oid):
        return {"oid": oid, "size": size}  # this repo already has it: nothing to upload
    chunk = app.config.multipart_chunk_size
    ticket = Ticket(repo.key, oid, size, chunk if multipart and size > chunk else 0)
    url = f"{req.base_url}/_lfs/{ticket.encode(app.secret)}"
    upload: dict = {"href": url}
    if ticket.chunk_size:
        upload["header"] = {"chunk_size": str(ticket.chunk_size)}
        upload["header"].update({str(n): f"{url}/part/{n}" for n in range(1, ticket.parts + 1)})
    return {
        "oid": oid,
        "size": size,
        "authenticated": True,
        "actions": {"upload": upload, "verify": {"href": f"{url}/verify"}},
    }


def _live_repo(app: App, ticket: Ticket) -> Repo:
    repo = app.storage.get(ticket.key)
    if repo is None:
        raise HubError(404, "Repository Not Found", "RepoNotFound")
    return repo


def _accept(app: App, ticket: Ticket, staged: StagedFile) -> None:
    """Keep the staged bytes if they are the announced object, and give them to the repo."""
    if staged.size != ticket.size or staged.sha256 != ticket.oid:
        app.storage.objects.discard(staged)
        raise HubError(
            400,
            f"Uploaded content does not match: expected sha256 {ticket.oid} size {ticket.size}, "
            f"got {staged.sha256} size {staged.size}",
        )
    repo = _live_repo(app, ticket)
    app.storage.objects.adopt_lfs(staged)
    app.storage.grant_lfs(repo, ticket.oid)
    log.info("lfs object %s (%d bytes) received by %s", ticket.oid, ticket.size, ticket.key.repo_id)


def put_object(app: App, req: Request, ticket_text: str) -> Response:
    """Basic transfer: the whole object in one PUT."""
    ticket = Ticket.decode(app.secret, ticket_text)
    if ticket.chunk_size:
        raise HubError(400, "This object must be uploaded in parts")
    _live_repo(app, ticket)
    staged = app.storage.objects.stage(req.body.chunks())
    _accept(app, ticket, staged)
    return Response(200)


def put_part(app: App, req: Request, ticket_text: str, part: str) -> Response:
    """One part, written where it belongs in the object, so completion copies nothing (as S3's
    CompleteMultipartUpload, behind the Hub's completion URL, copies nothing through the
    client's path). A part sent again overwrites its own range; its ETag is written last, so a
    part cut short counts as missing."""
    ticket = Ticket.decode(app.secret, ticket_text)
    number = int(part)
    if not ticket.chunk_size or not 1 <= number <= ticket.parts:
        raise HubError(400, f"Invalid part number {part}")
    _live_repo(app, ticket)
    start = (number - 1) * ticket.chunk_size
    expected = min(ticket.chunk_size, ticket.size - start)
    folder = app.storage.objects.upload_dir(ticket.upload_key)
    etag_file = folder / f"part-{number:05d}.etag"
    etag_file.unlink(missing_ok=True)
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    fd = os.open(folder / OBJECT_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in req.body.chunks():
            # Never past the part's own range: a longer body must not overwrite the next part.
            kept = chunk[:max(0, expected - received)]
            if kept:
                os.pwrite(fd, kept, start + received)
                md5.update(kept)
            received += len(chunk)
    finally:
        os.close(fd)
    if received != expected:
        raise HubError(400, f"Part {number} must be {expected} bytes, got {received}")
    etag_file.write_text(md5.hexdigest())
    return Response(200, headers={"ETag": f'"{md5.hexdigest()}"'})


def complete_multipart(app: App, req: Request, ticket_text: str) -> Response:
    ticket = Ticket.decode(app.secret, ticket_text)
    if not ticket.chunk_size:
        raise HubError(405, "Use PUT to upload this object")
    payload = req.body.json()
    parts = payload.get("parts") or []
    if payload.get("oid") != ticket.oid or len(parts) != ticket.parts:
        raise HubError(400, f"Completion must list the {ticket.parts} parts of {ticket.oid}")
    folder = app.storage.objects.upload_dir(ticket.upload_key)
    for number, part in enumerate(sorted(parts, key=lambda p: p.get("partNumber", 0)), start=1):
        etag_file = folder / f"part-{number:05d}.etag"
        sent = str(part.get("etag", "")).strip('"')
        if part.get("partNumber") != number or not etag_file.is_file() \
                or etag_file.read_text() != sent:
            raise HubError(400, f"Part {number} is missing or its ETag does not match")
    objects = app.storage.objects
    staged = objects.hash_in_place(folder / OBJECT_FILE)
    if staged.size != ticket.size or staged.sha256 != ticket.oid:
        # The parts stay: one sent again fixes the object, as with S3.
        raise HubError(
            400,
            f"Uploaded content does not match: expected sha256 {ticket.oid} size {ticket.size}, "
            f"got {staged.sha256} size {staged.size}",
        )
    _accept(app, ticket, staged)
    objects.drop_upload_dir(ticket.upload_key)
    return lfs_json({"oid": ticket.oid, "size": ticket.size})


def verify(app: App, req: Request, ticket_text: str) -> Response:
    ticket = Ticket.decode(app.secret, ticket_text)
    repo = find_repo(app, req, ticket.key)
    payload = req.body.json()
    oid, size = payload.get("oid", ticket.oid), payload.get("size", ticket.size)
    if oid not in repo.lfs_objects or not app.storage.objects.has_lfs(oid, size):
        raise HubError(404, f"Object {oid} was not received by {ticket.key.repo_id}")
    return lfs_json({"message": "Object verified"})
