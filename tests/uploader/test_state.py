import dataclasses
import sqlite3
import threading
from datetime import UTC, datetime

import pytest

from shared.layout import FolderRef, Kind
from shared.markers import FileStat, Marker, format_utc
from uploader import fsinfo
from uploader.detect import FolderVersion
from uploader.errors import ConfigError
from uploader.state import DB_FILENAME, SCHEMA_VERSION, State, StateStore

WHEN = datetime(2026, 11, 4, 14, 30, 22, tzinfo=UTC)
DEADLINE = 20.0


def version(step: int | None = 10, *, key: str | None = None, marker: bool = False,
            kind: Kind = Kind.CHECKPOINT) -> FolderVersion:
    name = "final" if kind is Kind.FINAL else f"checkpoint-{step}"
    files = (FileStat("adapter_model.safetensors", 100, 1), FileStat("trainer_state.json", 20, 2))
    mark = None
    if marker:
        mark = Marker(run_id="run-1", folder=name, step=step or 0, kind=kind,
                      written_at=format_utc(WHEN), files=files, origin_repo="ns/origin")
    return FolderVersion(
        ref=FolderRef(kind, name, None if kind is Kind.FINAL else step),
        step=step or 0,
        files=files,
        inodes=(("adapter_model.safetensors", 11), ("trainer_state.json", 12)),
        version_key=key or f"key-{name}",
        timestamp=WHEN,
        run_id=mark.run_id if mark else None,
        marker=mark,
        origin_repo=mark.origin_repo if mark else None,
        detected_by="marker" if mark else "settle",
    )


def add(store, v, **kw):
    return store.add(v, repo_id=f"ns/p-{v.ref.name}", url=f"https://hub/{v.ref.name}",
                     metrics=kw.pop("metrics", {"eval_loss": 0.5}), **kw)


@pytest.fixture
def store(tmp_path):
    s = StateStore.open(tmp_path / "state", clock=lambda: 1000.0)
    yield s
    s.close()


def test_add_is_idempotent_on_version_key(store):
    first = add(store, version(10, marker=True))
    store.update(first.id, state=State.UPLOADING, attempts=1)
    again = add(store, version(10, marker=True), metrics={"eval_loss": 9.0})
    assert again.id == first.id
    assert again.state is State.UPLOADING and again.attempts == 1
    assert again.metrics == {"eval_loss": 0.5}
    assert len(store.all()) == 1


def test_add_records_the_version(store):
    rec = add(store, version(10, marker=True))
    assert rec.version_key == "key-checkpoint-10"
    assert (rec.folder, rec.kind, rec.step) == ("checkpoint-10", Kind.CHECKPOINT, 10)
    assert rec.run_id == "run-1" and rec.origin_repo == "ns/origin"
    assert rec.state is State.PENDING and rec.attempts == 0 and not rec.permanent
    assert rec.bytes == 120 and rec.files == version(10).files
    assert rec.timestamp == format_utc(WHEN)
    assert rec.detected_at == 1000.0
    assert rec.completed_at == WHEN.timestamp()  # the marker's written time
    assert rec.eval_loss == 0.5 and not rec.staged
    settled = add(store, version(20))
    assert settled.completed_at == 1000.0 and settled.run_id is None
    assert add(store, version(30), metrics={}).eval_loss is None


def test_transitions_persist_across_reopen(tmp_path):
    state_dir = tmp_path / "state"
    with StateStore.open(state_dir) as store:
        rec = add(store, version(10))
        store.update(rec.id, state=State.FAILED, attempts=2, last_error="boom",
                     error_class="TransientError", next_attempt_at=5.0, staged=True,
                     metrics={"eval_loss": 0.25})
        store.update(rec.id, state="verified", commit_sha="abc", verified_at=7.5,
                     upload_seconds=1.5, permanent=True)
        store.meta_set("namespace", "me")
        store.meta_set("namespace", "you")
    with StateStore.open(state_dir) as store:
        got = store.get(rec.id)
        assert got.state is State.VERIFIED and got.attempts == 2
        assert (got.last_error, got.error_class, got.next_attempt_at) == (
            "boom", "TransientError", 5.0)
        assert got.commit_sha == "abc" and got.verified_at == 7.5 and got.upload_seconds == 1.5
        assert got.permanent and got.staged and got.eval_loss == 0.25
        assert store.meta_get("namespace") == "you" and store.meta_get("missing") is None
        assert store.by_key(rec.version_key) == got


def test_update_validates_names_and_ids(store):
    rec = add(store, version(10))
    for bad in ({"id": 3}, {"version_key": "x"}, {"nope": 1}):
        with pytest.raises(ValueError):
            store.update(rec.id, **bad)
    with pytest.raises(ValueError):
        store.update(rec.id, state="not-a-state")
    with pytest.raises(KeyError):
        store.update(rec.id + 99, attempts=1)
    with pytest.raises(KeyError):
        store.get(rec.id + 99)


def test_queries_and_ordering(store):
    final = add(store, version(7, kind=Kind.FINAL))
    c20 = add(store, version(20))
    c10 = add(store, version(10))
    c10b = add(store, version(10, key="key-checkpoint-10-rewritten"))
    assert [r.id for r in store.all()] == [c10.id, c10b.id, c20.id, final.id]
    assert [r.id for r in store.by_folder("checkpoint-10")] == [c10b.id, c10.id]
    assert [r.id for r in store.by_repo("ns/p-checkpoint-10")] == [c10.id, c10b.id]
    assert store.by_key("absent") is None


def test_due_ordering_and_backoff(store):
    final = add(store, version(5, kind=Kind.FINAL))
    c30 = add(store, version(30))
    c20 = add(store, version(20))
    c10 = add(store, version(10))
    c40 = add(store, version(40))
    c50 = add(store, version(50))
    c60 = add(store, version(60))
    store.update(c20.id, state=State.FAILED, next_attempt_at=150.0)
    store.update(c30.id, state=State.UPLOADING)  # interrupted by a crash
    store.update(c40.id, state=State.FAILED, next_attempt_at=50.0, permanent=True)
    store.update(c50.id, state=State.VERIFIED)
    store.update(c60.id, state=State.COMMITTED)
    assert [r.id for r in store.due(100.0)] == [c10.id, c30.id, c60.id, final.id]
    assert [r.id for r in store.due(150.0)] == [c10.id, c20.id, c30.id, c60.id, final.id]
    store.update(c20.id, state=State.FAILED, next_attempt_at=None)
    assert c20.id in [r.id for r in store.due(0.0)]
    for terminal in (State.PRUNED, State.SUPERSEDED, State.DELETED):
        store.update(c10.id, state=terminal)
        assert c10.id not in [r.id for r in store.due(1e12)]


def test_every_write_is_committed_before_it_returns(tmp_path):
    with StateStore.open(tmp_path) as store:
        rec = add(store, version(10))
        store.update(rec.id, state=State.UPLOADING)
        # A separate connection sees it at once: nothing waits in an open transaction.
        other = sqlite3.connect(tmp_path / DB_FILENAME)
        try:
            row = other.execute("SELECT state FROM checkpoints WHERE id = ?", (rec.id,)).fetchone()
            assert row == ("uploading",)
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert other.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            other.close()


def test_concurrent_reader_while_writer_writes(tmp_path):
    writer = StateStore.open(tmp_path)
    rec = add(writer, version(10))
    reader = StateStore.open(tmp_path, readonly=True)
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = 0

    def write_loop():
        nonlocal writes
        try:
            while not stop.is_set():
                writes += 1
                writer.update(rec.id, attempts=writes)
                add(writer, version(1000 + writes))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write_loop)
    thread.start()
    try:
        seen: set[int] = set()
        reads = 0
        while len(seen) < 20 and reads < 100_000 and not errors:
            records = reader.all()
            attempts = next(r.attempts for r in records if r.id == rec.id)
            # Each read is a consistent snapshot: never more attempts than added rows.
            assert len(records) >= attempts
            seen.add(attempts)
            reads += 1
        assert len(seen) >= 20
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert not errors
    with pytest.raises(PermissionError):
        reader.update(rec.id, attempts=0)
    reader.close()
    writer.close()


def test_readonly_needs_an_existing_state(tmp_path):
    with pytest.raises(ConfigError) as info:
        StateStore.open(tmp_path / "none", readonly=True)
    assert info.value.hint
    assert not (tmp_path / "none").exists()


def test_newer_schema_is_refused(tmp_path):
    StateStore.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for readonly in (False, True):
        with pytest.raises(ConfigError, match="newer"):
            StateStore.open(tmp_path, readonly=readonly)


def test_network_filesystem_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(fsinfo, "is_network_filesystem", lambda path, **_: "nfs4")
    with pytest.raises(ConfigError) as info:
        StateStore.open(tmp_path / "state")
    assert info.value.message == (
        f"state dir {tmp_path / 'state'} is on nfs4; SQLite WAL needs a local filesystem")
    assert info.value.hint == "pass --state-dir on local disk"
    assert not (tmp_path / "state").exists()


def test_readonly_after_the_writer_closed(tmp_path):
    with StateStore.open(tmp_path) as writer:
        rec = add(writer, version(10))
        writer.meta_set("heartbeat", "12.5")
    with StateStore.open(tmp_path, readonly=True) as reader:
        assert [r.id for r in reader.all()] == [rec.id]
        assert reader.meta_get("heartbeat") == "12.5"
        with pytest.raises(PermissionError):
            reader.meta_set("heartbeat", "0")
        with pytest.raises(PermissionError):
            add(reader, version(20))


def test_a_v1_state_is_migrated_and_its_uploaded_rows_become_committed(tmp_path):
    store = StateStore.open(tmp_path)
    record = add(store, version(30))
    store.close()
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("UPDATE checkpoints SET state = 'uploaded'")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="older"):
        StateStore.open(tmp_path, readonly=True)
    store = StateStore.open(tmp_path)
    try:
        migrated = store.get(record.id)
        assert migrated.state is State.COMMITTED
        assert [r.id for r in store.due(now=0.0)] == [record.id]
    finally:
        store.close()


def test_all_without_files_is_the_same_rows_with_no_file_list(store):
    add(store, version(10, marker=True))
    add(store, version(20), metrics={"eval_loss": 0.25, "epoch": 1.0})
    store.update(store.all()[1].id, state=State.FAILED, permanent=True, last_error="x")
    full, light = store.all(), store.all(with_files=False)
    assert [r.files for r in full] == [version(10).files, version(20).files]
    assert [r.files for r in light] == [(), ()]
    assert [dataclasses.replace(r, files=()) for r in full] == light
    assert light[1].state is State.FAILED and light[1].permanent is True
    assert light[1].kind is Kind.CHECKPOINT and light[1].metrics["epoch"] == 1.0


def test_latest_versions_is_each_folders_newest_row_and_follows_every_write(store, tmp_path):
    first = add(store, version(10))
    add(store, version(20))
    latest = store.latest_versions()
    assert set(latest) == {"checkpoint-10", "checkpoint-20"}
    assert latest["checkpoint-10"] == (State.PENDING, "key-checkpoint-10", 10)
    assert store.latest_versions() is latest, "nothing written: the same answer, not re-read"
    store.meta_set("watcher_heartbeat", "1.0")
    assert store.latest_versions() is latest, "a meta write does not touch the checkpoints"
    store.update(first.id, state=State.VERIFIED)
    assert store.latest_versions()["checkpoint-10"].state is State.VERIFIED
    add(store, version(10, key="key-checkpoint-10-v2"))  # a re-save: the newest row wins
    assert store.latest_versions()["checkpoint-10"] == (State.PENDING, "key-checkpoint-10-v2", 10)
    with pytest.raises(TypeError):
        store.latest_versions()["checkpoint-99"] = latest["checkpoint-20"]  # type: ignore[index]
    # Another process (another `uploader` command) writes through its own connection.
    other = StateStore.open(tmp_path / "state")
    try:
        other.update(other.by_key("key-checkpoint-20").id, state=State.FAILED)
    finally:
        other.close()
    assert store.latest_versions()["checkpoint-20"].state is State.FAILED
