"""The uploader's memory: one SQLite row per checkpoint version, one committed write per step.

"Record, then act": every transition is written (and committed, durable) before the action it
announces, so a crash at any point leaves a row saying what may have been half done; `due()`
hands such rows back (UPLOADING and COMMITTED included) and the idempotent pipeline redoes them.

WAL mode lets `status` read (`readonly=True`, a `mode=ro` connection that takes no writer lock)
while the watcher writes. WAL needs shared memory between the processes of one host, so a state
dir on a network filesystem is refused at open.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from shared.layout import Kind
from shared.markers import FileStat, format_utc
from uploader import fsinfo
from uploader.detect import FolderVersion
from uploader.errors import ConfigError

DB_FILENAME = "state.db"
# Meta key: when the watcher's loops last ran, for `status --health`.
HEARTBEAT_KEY = "watcher_heartbeat"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 10_000

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version_key TEXT NOT NULL UNIQUE,
    folder TEXT NOT NULL,
    kind TEXT NOT NULL,
    step INTEGER NOT NULL,
    run_id TEXT,
    repo_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_class TEXT,
    permanent INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    bytes INTEGER NOT NULL,
    files TEXT NOT NULL,
    detected_at REAL NOT NULL,
    completed_at REAL,
    uploaded_at REAL,
    verified_at REAL,
    upload_seconds REAL,
    commit_sha TEXT,
    url TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    origin_repo TEXT,
    staged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS checkpoints_folder ON checkpoints (folder);
CREATE INDEX IF NOT EXISTS checkpoints_repo ON checkpoints (repo_id);
CREATE INDEX IF NOT EXISTS checkpoints_state ON checkpoints (state);
"""
# v2: the state after the commit is `committed` (listing matched), not `uploaded`.
_SCHEMA_V2 = "UPDATE checkpoints SET state = 'committed' WHERE state = 'uploaded'"
# MIGRATIONS[n] brings a database from user_version n to n + 1.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2)

_ORDER = "ORDER BY kind = 'final', step, id"


class State(enum.StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    # Two levels of "on the Hub": the commit lists every file with our size (`committed`), and
    # every file's hash as the Hub derived it from the bytes it received is ours (`verified`).
    COMMITTED = "committed"
    VERIFIED = "verified"
    PRUNED = "pruned"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    DELETED = "deleted"


# Rows `due()` returns regardless of errors: PENDING never started, and UPLOADING/COMMITTED mean
# an attempt was interrupted (a crash) and is redone.
_RESUMABLE = (State.PENDING, State.UPLOADING, State.COMMITTED)


class LatestVersion(NamedTuple):
    """A folder's newest record, as a rescan needs it."""

    state: State
    version_key: str
    step: int


@dataclass(frozen=True)
class Record:
    id: int
    version_key: str
    folder: str
    kind: Kind
    step: int
    run_id: str | None
    repo_id: str
    timestamp: str  # ISO 8601 UTC, the repo id's timestamp
    state: State
    attempts: int
    last_error: str | None
    error_class: str | None
    permanent: bool
    next_attempt_at: float | None
    bytes: int
    files: tuple[FileStat, ...]
    detected_at: float
    completed_at: float | None  # marker written time, or the time the folder settled (epoch)
    uploaded_at: float | None
    verified_at: float | None
    upload_seconds: float | None
    commit_sha: str | None
    url: str | None
    metrics: dict[str, float]
    origin_repo: str | None
    staged: bool

    @property
    def eval_loss(self) -> float | None:
        return self.metrics.get("eval_loss")


_COLUMNS = tuple(f.name for f in fields(Record))
_UPDATABLE = frozenset(_COLUMNS) - {"id", "version_key"}


def _to_column(name: str, value: Any) -> Any:
    if name == "files":
        return json.dumps([[f.path, f.size, f.mtime_ns] for f in value])
    if name == "metrics":
        return json.dumps({str(k): float(v) for k, v in dict(value).items()}, sort_keys=True)
    if name in ("permanent", "staged"):
        return int(bool(value))
    if isinstance(value, enum.Enum):
        return value.value
    return value


_SELECTED = ", ".join(_COLUMNS)  # in Record's field order: a row becomes a Record positionally
_AT = {name: index for index, name in enumerate(_COLUMNS)}
_KINDS = {kind.value: kind for kind in Kind}
_STATES = {state.value: state for state in State}


def _from_row(row: sqlite3.Row, with_files: bool = True) -> Record:
    # Positional and by lookup table: `status` decodes 10,000 rows of ten files each.
    values = list(row)
    values[_AT["kind"]] = _KINDS[values[_AT["kind"]]]
    values[_AT["state"]] = _STATES[values[_AT["state"]]]
    values[_AT["files"]] = (tuple(FileStat(*f) for f in json.loads(values[_AT["files"]]))
                            if with_files else ())
    values[_AT["metrics"]] = {k: float(v) for k, v in json.loads(values[_AT["metrics"]]).items()}
    values[_AT["permanent"]] = bool(values[_AT["permanent"]])
    values[_AT["staged"]] = bool(values[_AT["staged"]])
    return Record(*values)


class StateStore:
    """The state database of one state dir. Thread-safe: one connection behind a lock."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool,
                 clock: Callable[[], float]) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        self.readonly = readonly
        self._clock = clock
        # Rows of checkpoints written through this connection: with SQLite's data_version
        # (commits by any other connection), when `latest_versions` must be read again.
        self._row_writes = 0
        self._latest: tuple[tuple[int, int], Mapping[str, LatestVersion]] | None = None

    @classmethod
    def open(cls, state_dir: Path, *, readonly: bool = False,
             clock: Callable[[], float] = time.time) -> StateStore:
        state_dir = Path(state_dir)
        fstype = fsinfo.is_network_filesystem(state_dir)
        if fstype:
            raise ConfigError(
                f"state dir {state_dir} is on {fstype}; SQLite WAL needs a local filesystem",
                hint="pass --state-dir on local disk",
            )
        path = state_dir / DB_FILENAME
        if readonly:
            conn = _connect_readonly(path)
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            conn = _connect_writer(path)
        store = cls(conn, path, readonly=readonly, clock=clock)
        try:
            _check_schema(conn, path, readonly)
        except BaseException:
            conn.close()
            raise
        return store

    # -- reads ------------------------------------------------------------------------------

    def _select(self, where: str = "", params: tuple[Any, ...] = (), order: str = _ORDER,
                with_files: bool = True) -> list[Record]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_SELECTED} FROM checkpoints {where} {order}", params
            ).fetchall()
        return [_from_row(row, with_files) for row in rows]

    def get(self, record_id: int) -> Record:
        rows = self._select("WHERE id = ?", (record_id,))
        if not rows:
            raise KeyError(f"no checkpoint record with id {record_id}")
        return rows[0]

    def by_key(self, version_key: str) -> Record | None:
        rows = self._select("WHERE version_key = ?", (version_key,))
        return rows[0] if rows else None

    def latest_versions(self) -> Mapping[str, LatestVersion]:
        """Each folder's newest record: its state, version key and step. Every rescan asks,
        and over 10,000 idle checkpoints the answer rarely changes: it is read again only
        after a write to the checkpoints, here or by another process (another `uploader`
        command), and is shared between callers, read-only."""
        with self._lock:
            stamp = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]),
                     self._row_writes)
            if self._latest is not None and self._latest[0] == stamp:
                return self._latest[1]
            rows = self._conn.execute(
                "SELECT folder, state, version_key, step FROM checkpoints ORDER BY id").fetchall()
            latest = MappingProxyType({str(folder): LatestVersion(State(state), str(key),
                                                                  int(step))
                                       for folder, state, key, step in rows})
            self._latest = (stamp, latest)
        return latest

    def has_key(self, version_key: str) -> bool:
        """Whether this version is recorded (cheaper than `by_key`: every rescan asks)."""
        with self._lock:
            return self._conn.execute("SELECT 1 FROM checkpoints WHERE version_key = ?",
                                      (version_key,)).fetchone() is not None

    def by_folder(self, folder: str) -> list[Record]:
        return self._select("WHERE folder = ?", (folder,), order="ORDER BY id DESC")

    def by_repo(self, repo_id: str) -> list[Record]:
        return self._select("WHERE repo_id = ?", (repo_id,), order="ORDER BY id")

    def all(self, with_files: bool = True) -> list[Record]:
        """Every record. `with_files=False` leaves each record's `files` empty, for readers
        that show rows and never compare contents (`status`): most of the decoding saved."""
        return self._select(with_files=with_files)

    def due(self, now: float) -> list[Record]:
        """Rows to work on now, checkpoints by step, the final adapter last.

        PENDING, UPLOADING and COMMITTED rows are due (the last two after an interrupted
        attempt), FAILED ones when not permanent and their backoff has passed. A row whose
        `next_attempt_at` lies in the future is never due, whatever its state.
        """
        resumable = ", ".join("?" for _ in _RESUMABLE)
        return self._select(
            f"WHERE (next_attempt_at IS NULL OR next_attempt_at <= ?) AND "
            f"(state IN ({resumable}) OR (state = ? AND permanent = 0))",
            (now, *(s.value for s in _RESUMABLE), State.FAILED.value),
        )

    def meta_get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- writes: each one statement in autocommit mode, i.e. its own committed transaction ----

    def add(self, version: FolderVersion, *, repo_id: str, url: str,
            metrics: Mapping[str, float], state: State = State.PENDING) -> Record:
        """Insert a row for a new version; an existing row for its key is returned unchanged."""
        now = self._clock()
        completed_at = version.marker.written_datetime.timestamp() if version.marker else now
        values = {
            "version_key": version.version_key,
            "folder": version.ref.name,
            "kind": version.ref.kind,
            "step": version.step,
            "run_id": version.run_id,
            "repo_id": repo_id,
            "timestamp": format_utc(version.timestamp),
            "state": state,
            "bytes": version.total_bytes,
            "files": version.files,
            "detected_at": now,
            "completed_at": completed_at,
            "url": url,
            "metrics": metrics,
            "origin_repo": version.origin_repo,
        }
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        params = tuple(_to_column(k, v) for k, v in values.items())
        with self._lock:
            self._writable()
            self._conn.execute(
                f"INSERT INTO checkpoints ({names}) VALUES ({marks}) "
                "ON CONFLICT (version_key) DO NOTHING",
                params,
            )
            self._row_writes += 1
        record = self.by_key(version.version_key)
        assert record is not None  # inserted above or already present
        return record

    def update(self, record_id: int, **changes: Any) -> Record:
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise ValueError(f"cannot update {', '.join(unknown)}: not an updatable Record field")
        if changes:
            if "state" in changes:
                changes["state"] = State(changes["state"])
            if "kind" in changes:
                changes["kind"] = Kind(changes["kind"])
            assignments = ", ".join(f"{name} = ?" for name in changes)
            params = tuple(_to_column(k, v) for k, v in changes.items())
            with self._lock:
                self._writable()
                cursor = self._conn.execute(
                    f"UPDATE checkpoints SET {assignments} WHERE id = ?", (*params, record_id)
                )
                self._row_writes += 1
            if cursor.rowcount == 0:
                raise KeyError(f"no checkpoint record with id {record_id}")
        return self.get(record_id)

    def meta_delete(self, key: str) -> None:
        with self._lock:
            self._writable()
            self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def meta_set(self, key: str, value: str) -> None:
        with self._lock:
            self._writable()
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def _writable(self) -> None:
        if self.readonly:
            raise PermissionError(f"state store {self.path} was opened read-only")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect_writer(path: Path) -> sqlite3.Connection:
    # isolation_level=None: autocommit, so every write statement commits before it returns.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: in WAL mode the default (NORMAL) may lose the last commits on power loss, and
    # "record, then act" needs the record to survive whatever the act did.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigError(f"no uploader state at {path}",
                          hint="check --state-dir, or start the uploader once to create it")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    """Create or migrate the schema (writer), or check it is current (reader)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"state {path} has schema {version}, newer than this uploader's {SCHEMA_VERSION}",
            hint="upgrade checkpoint-sidecar, or use another --state-dir",
        )
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise ConfigError(
            f"state {path} has schema {version}, older than {SCHEMA_VERSION}",
            hint="start the uploader once (it migrates the state), then retry",
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another writer may have migrated meanwhile.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
