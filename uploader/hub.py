"""The Hub, as the uploader needs it: a small typed facade over huggingface_hub's `HfApi`.

Every call goes through `call_with_retry` (huggingface_hub retries neither whoami, create_repo,
repo_info, paths-info nor the commit POST) and raises only `uploader.errors` types. The token is
asked from `token_provider` for every call, so a rotated secret file takes effect at once, and it
is registered with `retry.register_secret` so no message ever shows it.

The HTTP client factory of huggingface_hub is process-global (`set_client_factory`): `HubClient`
installs one that gives every request connect/read timeouts (the client sets none: a stalled
server would hang an upload forever). The transfer (Xet or plain LFS, `uploader.transfer`) is
chosen per client and held only for the duration of each call (`hfcompat.xet_switch`). With
`--transfer auto`, the first commit to an endpoint asks its Xet token route once; a 404 there
means a server without Xet storage, and the client says so once and uses LFS from then on.

Writes that the Hub rate-limits per account (repo creation, the commit POST) first take a slot
from the optional `Pacer` (`uploader.pacing`), on every attempt. Rate limits the Hub answered are
counted in `rate_limits` (429s waited out or surfaced).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import hf_hub_url
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from shared.hashing import FileDigest
from shared.manifest import MANIFEST_FILENAME, Manifest
from uploader.errors import (
    AuthError,
    ConfigError,
    RateLimitedError,
    StagingError,
    TransientError,
    UploaderError,
    XetUnavailableError,
)
from uploader.hfcompat import declare_sha256, forget_shard_cache, xet_switch
from uploader.http_client import install_http_client
from uploader.pacing import Operation, Pacer
from uploader.progress import commit_progress, send_progress
from uploader.retry import (
    NAMESPACE_HINT,
    READ_ONLY_HINT,
    RetryPolicy,
    call_with_retry,
    classify,
    one_line,
    register_secret,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

LIBRARY_NAME = "checkpoint-sidecar"
# get_paths_info posts every path in one form; keep each request well below server limits.
PATHS_INFO_BATCH = 100
WRITE_ROLE = "write"
READ_ROLE = "read"
FINE_GRAINED_ROLE = "fineGrained"
REPO_WRITE_PERMISSION = "repo.write"


@dataclass(frozen=True)
class HubConfig:
    endpoint: str
    token_provider: Callable[[], str]
    private: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    use_xet: bool = True  # False: plain LFS (see uploader.transfer.choose_transfer)
    xet_fallback: bool = False  # --transfer auto: an endpoint without Xet gets LFS
    xet_cache: Path | None = None  # hf_xet's cache (HF_XET_CACHE), to drop its shard cache


@dataclass(frozen=True)
class Identity:
    """Who the token belongs to, from whoami."""

    name: str
    role: str | None  # "read", "write", "fineGrained", or None when the Hub did not say
    orgs: tuple[str, ...]
    # For a fine-grained token: the namespaces it holds `repo.write` on; None = not known.
    writable: frozenset[str] | None = None

    def can_write(self, namespace: str) -> bool:
        if self.role == READ_ROLE:
            return False
        if namespace != self.name and namespace not in self.orgs:
            return False
        return self.writable is None or namespace in self.writable


@dataclass(frozen=True)
class LocalFile:
    """One file to commit, hashed once by the caller: the digest is reused for upload and
    verification, never recomputed."""

    path_in_repo: str
    digest: FileDigest
    local_path: Path | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.local_path is None) == (self.data is None):
            raise ValueError(f"{self.path_in_repo}: give exactly one of local_path and data")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    git_sha1: str | None  # regular files: the git blob sha1
    sha256: str | None  # LFS files: the content sha256
    is_lfs: bool

    @classmethod
    def from_repo_file(cls, entry: RepoFile) -> RemoteFile:
        if entry.lfs is not None:
            # An LFS entry's blob id is the sha1 of the pointer file, not of the content.
            return cls(entry.path, int(entry.size), None, entry.lfs.sha256, True)
        return cls(entry.path, int(entry.size), entry.blob_id, None, False)


class HubClient:
    """Typed, retried Hub operations for one endpoint and one token source."""

    def __init__(
        self,
        config: HubConfig,
        policy: RetryPolicy,
        stop: threading.Event | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[UploaderError, int, float], None] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """`stop` interrupts retry and pacing waits (shutdown); `sleep` and `on_retry` are
        passed to `call_with_retry` (tests inject `sleep`; the pipeline may count retries);
        `pacer` spaces repo creations and commits (None: no client-side cap)."""
        self.config = config
        self.policy = policy
        self.stop = stop
        self._sleep = sleep
        self._on_retry = on_retry
        self.pacer = pacer
        self.rate_limits = 0  # 429s answered by the Hub, across all calls
        self._count_lock = threading.Lock()
        self.endpoint = config.endpoint.rstrip("/")
        self._api = HfApi(endpoint=self.endpoint, library_name=LIBRARY_NAME)
        self._identity: Identity | None = None
        self._identity_lock = threading.Lock()
        # None until the first commit asked the endpoint (auto only); then True or False.
        self._xet_served: bool | None = None if config.xet_fallback else config.use_xet
        self._xet_lock = threading.Lock()
        install_http_client(config.connect_timeout, config.read_timeout,
                            urlsplit(self.endpoint).hostname or "", stop)

    # -- plumbing -------------------------------------------------------------------------

    def _token(self) -> str:
        try:
            token = self.config.token_provider()
        except UploaderError:
            raise
        except Exception as exc:  # a provider error (unreadable secret file) is configuration
            raise ConfigError(f"cannot read the Hub token: {one_line(str(exc))}",
                              "set HF_TOKEN or HF_TOKEN_FILE to a readable write token") from None
        if not token:
            raise ConfigError("no Hub token configured", "set HF_TOKEN or HF_TOKEN_FILE")
        register_secret(token)
        return token

    def _headers(self) -> dict[str, str]:
        return build_hf_headers(token=self._token(), library_name=LIBRARY_NAME)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        counted: list[UploaderError] = []  # 429s of this call already in `rate_limits`

        def retried(error: UploaderError, attempt: int, wait: float) -> None:
            if isinstance(error, RateLimitedError):
                counted.append(error)
                self._count_rate_limit()
            if self._on_retry is not None:
                self._on_retry(error, attempt, wait)

        try:
            return call_with_retry(self.policy, what, fn, stop=self.stop, sleep=self._sleep,
                                   on_retry=retried)
        except RateLimitedError as exc:
            if not any(exc is seen for seen in counted):  # surfaced without a wait
                self._count_rate_limit()
            raise

    def _count_rate_limit(self) -> None:
        with self._count_lock:
            self.rate_limits += 1

    def _pace(self, operation: Operation, what: str) -> None:
        if self.pacer is not None:
            self.pacer.acquire(operation, self.stop, what)

    def repo_url(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"

    # -- identity -------------------------------------------------------------------------

    def whoami(self) -> Identity:
        """The token's identity, asked once and cached (whoami is strictly rate limited)."""
        with self._identity_lock:
            if self._identity is None:
                raw = self._retry(f"whoami at {self.endpoint}",
                                  lambda: self._api.whoami(token=self._token()))
                self._identity = parse_identity(raw)
                log.debug("hub identity %s", self._identity.name,
                         extra={"user": self._identity.name, "role": self._identity.role,
                                "orgs": list(self._identity.orgs)})
            return self._identity

    def check_write_access(self, namespace: str) -> None:
        """AuthError unless the token can create repos and commit in `namespace`."""
        identity = self.whoami()
        if identity.role == READ_ROLE:
            raise AuthError(f"the token of user {identity.name!r} at {self.endpoint} is "
                            "read-only: it cannot create repos or commit", READ_ONLY_HINT)
        if not identity.can_write(namespace):
            owned = ", ".join((identity.name, *identity.orgs))
            raise AuthError(f"the token of user {identity.name!r} cannot write to namespace "
                            f"{namespace!r} (it can write to: {owned})", NAMESPACE_HINT)

    # -- repos ----------------------------------------------------------------------------

    def ensure_repo(self, repo_id: str) -> None:
        what = f"create repo {repo_id}"

        def attempt() -> None:
            self._pace(Operation.CREATE_REPO, what)
            self._api.create_repo(repo_id, private=self.config.private, exist_ok=True,
                                  token=self._token())

        self._retry(what, attempt)

    def repo_exists(self, repo_id: str) -> bool:
        return self._retry(f"check repo {repo_id}",
                           lambda: self._api.repo_exists(repo_id, token=self._token()))

    def head_sha(self, repo_id: str) -> str:
        info = self._retry(f"read repo {repo_id}",
                           lambda: self._api.repo_info(repo_id, token=self._token()))
        return str(info.sha)

    def list_repos(self, namespace: str, search: str) -> list[str]:
        """Model repo ids of `namespace` whose name contains `search` (all pages)."""
        return self._retry(f"list repos of {namespace}", lambda: sorted(
            str(m.id) for m in self._api.list_models(author=namespace, search=search,
                                                     token=self._token())))

    def delete_repo(self, repo_id: str) -> None:
        # missing_ok: a retry after a lost answer finds the repo already gone.
        self._retry(f"delete repo {repo_id}", lambda: self._api.delete_repo(
            repo_id, missing_ok=True, token=self._token()))

    # -- files ----------------------------------------------------------------------------

    def list_files(self, repo_id: str, revision: str | None = None) -> dict[str, RemoteFile]:
        """Every file of the repo at `revision` (default: main), recursively."""
        def listing() -> dict[str, RemoteFile]:
            entries = self._api.list_repo_tree(repo_id, recursive=True, revision=revision,
                                               token=self._token())
            return _files(entries)
        return self._retry(f"list files of {repo_id}", listing)

    def paths_info(self, repo_id: str, revision: str, paths: list[str]) -> dict[str, RemoteFile]:
        """The given files at `revision`; missing paths are simply absent from the result."""
        found: dict[str, RemoteFile] = {}
        for start in range(0, len(paths), PATHS_INFO_BATCH):
            batch = paths[start:start + PATHS_INFO_BATCH]
            found.update(self._retry(
                f"read paths of {repo_id}@{revision[:12]}",
                lambda batch=batch: _files(self._api.get_paths_info(
                    repo_id, batch, revision=revision, token=self._token()))))
        return found

    def read_manifest(self, repo_id: str, revision: str | None = None) -> Manifest | None:
        """The repo's checkpoint manifest; None when the repo, revision or file is missing.

        Raises ManifestError for a manifest that exists but is malformed.
        """
        raw = self._retry(f"read {MANIFEST_FILENAME} of {repo_id}",
                          lambda: self._fetch_small_file(repo_id, MANIFEST_FILENAME, revision))
        return None if raw is None else Manifest.from_bytes(raw)

    def _fetch_small_file(self, repo_id: str, path: str, revision: str | None) -> bytes | None:
        url = hf_hub_url(repo_id, path, revision=revision, endpoint=self.endpoint)
        response = get_session().get(url, headers=self._headers())
        try:
            hf_raise_for_status(response)
        except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError):
            return None
        return response.content

    def download(self, repo_id: str, revision: str, path: str, dest_dir: Path) -> Path:
        """One file at `revision` into `dest_dir` (kept at its repo path); its local path."""
        def fetch() -> str:
            with xet_switch(self.config.use_xet):
                return self._api.hf_hub_download(repo_id, path, revision=revision,
                                                 local_dir=dest_dir, token=self._token())

        return Path(self._retry(f"download {repo_id}/{path}", fetch))

    # -- transfer -------------------------------------------------------------------------

    @property
    def transfer(self) -> str:
        """"xet" or "lfs" as used now; "auto" until auto has asked the endpoint."""
        served = self._xet_served
        return "auto" if served is None else ("xet" if served else "lfs")

    def uses_xet(self, repo_id: str) -> bool:
        """Whether uploads to `repo_id` go through Xet (asks the endpoint once under auto)."""
        return self._uses_xet(repo_id)

    def _uses_xet(self, repo_id: str) -> bool:
        """Whether commits go through Xet; asks the endpoint once when the choice is auto."""
        if self._xet_served is not None:
            return self._xet_served
        with self._xet_lock:
            if self._xet_served is None:
                served = self._retry(f"check Xet storage at {self.endpoint}",
                                     lambda: self._xet_route_answers(repo_id))
                if not served:
                    self._fall_back_to_lfs()
                self._xet_served = served
            return self._xet_served

    def _xet_route_answers(self, repo_id: str) -> bool:
        url = f"{self.endpoint}/api/models/{repo_id}/xet-write-token/main"
        response = get_session().get(url, headers=self._headers())
        try:
            hf_raise_for_status(response)
        except RepositoryNotFoundError:
            raise
        except HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return False
            raise
        return True

    def _fall_back_to_lfs(self) -> None:
        self._xet_served = False
        log.info("%s has no Xet storage (404 on its Xet token route): uploading with plain LFS",
                 self.endpoint, extra={"endpoint": self.endpoint, "transfer": "lfs"})

    # -- commits --------------------------------------------------------------------------

    def preupload(self, repo_id: str, operations: Sequence[CommitOperationAdd],
                  use_xet: bool, total: int = 0) -> None:
        """Send the bytes of `operations` now; a later `commit(..., uploaded=...)` holding the
        same operation objects then only posts the commit. Lets the pipeline send one file while
        it hashes the next. A Xet route that vanished meanwhile fails this attempt (transient)
        after switching the client to LFS, so the next attempt re-declares hashes for LFS.
        `total`: the whole upload's bytes, for the progress line."""
        what = f"upload {len(operations)} files to {repo_id}"
        sizes = {str(op.path_or_fileobj): op.upload_info.size for op in operations
                 if isinstance(op.path_or_fileobj, str)}

        def attempt() -> None:
            try:
                with xet_switch(use_xet), send_progress(repo_id, sizes, total):
                    self._api.preupload_lfs_files(repo_id, list(operations),
                                                  token=self._token(), free_memory=False)
            except Exception as exc:
                if use_xet and self.config.xet_fallback and isinstance(
                        classify(exc, what), XetUnavailableError):
                    self._fall_back_to_lfs()
                    raise TransientError(f"{what}: Xet storage went away; LFS from now on",
                                         "retried with LFS") from None
                raise

        self._retry(what, attempt)

    def commit(self, repo_id: str, files: list[LocalFile], message: str,
               replace: Sequence[str] = (), uploaded: Preuploaded | None = None) -> str:
        """One commit holding every file; returns its 40-hex sha.

        When everything is already there the client posts no commit and answers the current
        head, which is also what a retry after a lost commit answer sees. `replace` names
        remote files to send again even if the Hub lists them as identical (a repair): they
        are deleted and added in the same commit, and hf_xet's shard cache is dropped first so
        it does not skip the bytes it believes the storage holds. `uploaded`: operations whose
        bytes `preupload` already sent, reused while the transfer they were sent with holds.
        """
        what = f"commit {len(files)} files to {repo_id}"

        def attempt() -> str:
            use_xet = self._uses_xet(repo_id)
            self._pace(Operation.COMMIT, what)
            if replace and use_xet:
                forget_shard_cache(self.config.xet_cache)
            try:
                return self._create_commit(repo_id, files, message, use_xet, replace,
                                           uploaded if uploaded and uploaded.use_xet == use_xet
                                           else None)
            except Exception as exc:
                if not (use_xet and self.config.xet_fallback and isinstance(
                        classify(exc, what), XetUnavailableError)):
                    raise
            self._fall_back_to_lfs()  # the route vanished since we asked: once, then LFS
            return self._create_commit(repo_id, files, message, False, replace)

        sha = self._retry(what, attempt)
        log.info("committed %s to %s", sha[:12], repo_id,
                 extra={"repo_id": repo_id, "commit": sha, "files": len(files),
                        "transfer": self.transfer})
        return sha

    def _create_commit(self, repo_id: str, files: list[LocalFile], message: str,
                       use_xet: bool, replace: Sequence[str] = (),
                       uploaded: Preuploaded | None = None) -> str:
        # Fresh operations each attempt (huggingface_hub mutates them while committing), except
        # those whose bytes were sent before: reusing them is what skips sending them twice.
        # A file deleted in the same commit is never skipped as unchanged.
        sent = uploaded.operations if uploaded is not None else {}
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationDelete(path_in_repo=path) for path in replace]
        operations += [sent.get(f.path_in_repo) or _operation(f, declare_hash=not use_xet)
                       for f in files]
        with xet_switch(use_xet), commit_progress(repo_id, files):  # the progress line
            info = self._api.create_commit(repo_id, operations, commit_message=message,
                                           token=self._token())
        return str(info.oid)


@dataclass(frozen=True)
class Preuploaded:
    """Operations whose bytes `HubClient.preupload` sent, by path in the repo."""

    use_xet: bool
    operations: Mapping[str, CommitOperationAdd]


def upload_operation(path_in_repo: str, source: Path | bytes, size: int,
                     sha256: str | None) -> CommitOperationAdd:
    """A CommitOperationAdd for one staged file of `size` bytes.

    `sha256` (LFS) reuses the caller's hash instead of re-reading the file. None (Xet): hf_xet
    hashes the bytes it actually reads for the upload, so the sha256 the Hub lists is evidence
    about those bytes, not an echo of our claim (verification compares the two).
    """
    try:
        operation = CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=(
            str(source) if isinstance(source, Path) else source))
    except ValueError as exc:
        raise StagingError(f"{path_in_repo}: cannot be committed: {exc}",
                           "the folder is staged again next round") from None
    if operation.upload_info.size != size:
        raise StagingError(
            f"{path_in_repo} changed since it was hashed ({size} -> "
            f"{operation.upload_info.size} bytes)",
            "the folder is staged and hashed again next round")
    if sha256 is not None:
        declare_sha256(operation, sha256)
    return operation


def _operation(file: LocalFile, declare_hash: bool) -> CommitOperationAdd:
    source: Path | bytes = file.local_path if file.local_path is not None else file.data or b""
    return upload_operation(file.path_in_repo, source, file.digest.size,
                            file.digest.sha256 if declare_hash else None)


def _files(entries: Any) -> dict[str, RemoteFile]:
    files: Iterator[RepoFile] = (e for e in entries if isinstance(e, RepoFile))
    return {f.path: RemoteFile.from_repo_file(f) for f in files}


def parse_identity(raw: dict[str, Any]) -> Identity:
    """whoami-v2's answer -> Identity (orgs by name; fine-grained write scopes when listed)."""
    access = ((raw.get("auth") or {}).get("accessToken")) or {}
    role = access.get("role")
    orgs = tuple(str(o["name"]) for o in raw.get("orgs") or [] if isinstance(o, dict)
                 and o.get("name"))
    writable: frozenset[str] | None = None
    fine = access.get("fineGrained")
    if role == FINE_GRAINED_ROLE and isinstance(fine, dict) and isinstance(fine.get("scoped"),
                                                                              list):
        writable = frozenset(
            str(scope.get("entity", {}).get("name"))
            for scope in fine["scoped"]
            if isinstance(scope, dict) and REPO_WRITE_PERMISSION in (scope.get("permissions") or [])
        )
    return Identity(name=str(raw.get("name")), role=role if isinstance(role, str) else None,
                    orgs=orgs, writable=writable)
