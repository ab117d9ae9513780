"""The running server's state (storage, users, faults, log) and the request value routes get."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlencode

from .auth import Directory, User, can_read, require_write
from .faults import FaultEngine
from .reqlog import RequestLog
from .storage import Repo, RepoKey, Storage
from .wire import BodyReader, HubError
from .xet_auth import DEFAULT_TOKEN_TTL_S
from .xet_store import XetStore

DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
REPO_TYPE_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# The Hub's text: the client's own message for this error already holds it, so it is not repeated.
REPO_NOT_FOUND = "Repository not found"
PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class AppConfig:
    data_dir: Path
    users: list[User]
    orgs: list[tuple[str, list[str]]] = field(default_factory=list)
    admin_token: str | None = None
    seed: int = 0
    multipart_chunk_size: int = DEFAULT_CHUNK_SIZE
    xet: bool = True  # False: an LFS-only server (--no-xet), its Xet token endpoints answer 404
    xet_token_ttl: int = DEFAULT_TOKEN_TTL_S
    fullnames: dict[str, str] = field(default_factory=dict)  # user/org -> whoami `fullname`


class App:
    def __init__(self, config: AppConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = Storage(config.data_dir)
        # Kept with --no-xet too: `damage` can still reach files stored by an earlier Xet run.
        self.xet = XetStore(config.data_dir / "xet")
        self.directory = Directory.build(config.users, config.orgs)
        self.faults = FaultEngine(config.seed)
        self.reqlog = RequestLog(config.data_dir / "requests.jsonl")
        self.secret = _load_secret(config.data_dir / "secret")
        self.stop = threading.Event()


def _load_secret(path: Path) -> bytes:
    """The key that signs LFS upload URLs; kept in the data dir so URLs survive a restart."""
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: BodyReader
    user: User | None
    base_url: str

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int) -> int:
        value = self.arg(name)
        if value is None or value == "":
            return default
        if not value.isdigit():
            raise HubError(400, f"Query parameter {name} must be a non-negative integer")
        return int(value)

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")


def repo_key(repo_type: str, namespace: str, name: str) -> RepoKey:
    return RepoKey(repo_type, unquote(namespace), unquote(name))


def find_repo(app: App, req: Request, key: RepoKey, write: bool = False) -> Repo:
    """The repo if the caller may see it (else 404 RepoNotFound); with `write`, 401/403 checks.

    `key` may differ from the repo's in case (lookups are case-insensitive, as on the Hub); the
    permissions are those of the repo's own namespace.
    """
    repo = app.storage.get(key)
    if repo is None or not can_read(req.user, repo.key.namespace, repo.private):
        raise HubError(404, REPO_NOT_FOUND, "RepoNotFound")
    if write:
        require_write(req.user, repo.key.namespace)
    return repo


def repo_url(req: Request, key: RepoKey) -> str:
    return f"{req.base_url}/{REPO_TYPE_PREFIXES[key.repo_type]}{key.repo_id}"


def next_link(req: Request, cursor_arg: str, next_cursor: int) -> dict[str, str]:
    """A `Link: <...>; rel="next"` header for the next page, on the caller's own Host."""
    query = [(k, v) for k, vs in req.query.items() if k != cursor_arg for v in vs]
    query.append((cursor_arg, str(next_cursor)))
    return {"Link": f'<{req.base_url}{req.path}?{urlencode(query)}>; rel="next"'}
