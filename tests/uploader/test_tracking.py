"""W&B tracking: driven with synthetic upload results in offline mode, then read back from the
run's own `.wandb` file (tests/support/wandb_records.py), never from what the tracker says."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.layout import Kind
from shared.manifest import ManifestFile
from shared.markers import FileStat
from shared.run_info import start_run
from tests.support.waiting import wait_for
from tests.support.wandb_records import OfflineRun, read_runs
from uploader.errors import TransientError
from uploader.events import UploadResult
from uploader.settings import UploaderSettings
from uploader.state import Record, State, StateStore
from uploader.tracking import (
    RUN_ID_KEY,
    Mode,
    NoTracking,
    TrackingConfig,
    WandbTracker,
    scrub_config,
    tracking_from_env,
    wandb_mode,
)

DEADLINE = 30.0
INSTANT = 0.25  # "returns at once": an enqueue, far below any W&B call
RUN_ID = "6f1c2a9e-0d4b-4c1e-9a55-3f8e2b7d1c00"
HF_CANARY = "hf_TrackingCanaryToken0123456789abcdef"
WANDB_CANARY = "wandbcanary" + "0123456789abcdef0123456789abcd"  # 40 chars, like a W&B key
FAST = {"wait_for_run_info": 0.0, "system_metrics": False, "flush_interval": 0.2,
        "finish_timeout": 10.0}
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- synthetic pipeline output ------------------------------------------------------------------


@dataclass(frozen=True)
class ResultWithFiles:
    """`UploadResult` plus the manifest's files, as the tracker reads them (`result.files`)."""

    record: Record
    seconds: float
    bytes: int
    adopted: bool
    files: tuple[ManifestFile, ...]


def make_record(step: int, *, eval_loss: float | None = None, kind: Kind = Kind.CHECKPOINT,
                url: str | None = None, state: State = State.VERIFIED,
                run_id: str | None = RUN_ID, attempts: int = 1) -> Record:
    name = "final" if kind is Kind.FINAL else f"checkpoint-{step}"
    repo_id = f"alice/ner-{name}"
    return Record(
        id=step * 10 + (1 if kind is Kind.FINAL else 0), version_key=f"key-{name}",
        folder=name, kind=kind, step=step, run_id=run_id, repo_id=repo_id,
        timestamp="2026-11-04T14:30:22Z", state=state, attempts=attempts, last_error=None,
        error_class=None, permanent=False, next_attempt_at=None, bytes=3000,
        files=(FileStat("adapter_model.safetensors", 2000, 1), FileStat("optimizer.pt", 1000, 2)),
        detected_at=1000.0 + step, completed_at=1000.0 + step, uploaded_at=1010.0 + step,
        verified_at=1012.5 + step, upload_seconds=2.0, commit_sha=f"{step:040x}",
        url=url or f"https://hub.example/{repo_id}",
        metrics={} if eval_loss is None else {"eval_loss": eval_loss}, origin_repo=None,
        staged=False)


def make_result(record: Record, *, with_files: bool = True) -> Any:
    if not with_files:
        return UploadResult(record, seconds=2.0, bytes=3_000_000, adopted=False)
    files = tuple(ManifestFile(f.path, f.size, f"{record.step:02d}{f.path}".encode().hex()[:64])
                  for f in record.files)
    return ResultWithFiles(record, seconds=2.0, bytes=3_000_000, adopted=False, files=files)


class MemoryMeta:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def meta_get(self, key: str) -> str | None:
        return self.values.get(key)

    def meta_set(self, key: str, value: str) -> None:
        self.values[key] = value


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def wandb_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """wandb's own dirs (artifact staging, caches, core logs) in a temp dir, not in ~."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
                     "WANDB_ARTIFACT_DIR"):
            mp.setenv(name, str(home / name.lower()))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        yield home


@pytest.fixture(autouse=True)
def no_leaked_workers() -> Iterator[None]:
    yield
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "wandb-tracker"],
             DEADLINE, "every W&B worker thread to end")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def offline_config(state_dir: Path, **kw: Any) -> TrackingConfig:
    return TrackingConfig(**({"mode": Mode.OFFLINE, "state_dir": state_dir} | FAST | kw))


def only_run(state_dir: Path) -> OfflineRun:
    """The state dir's one run, once finished: wandb-core writes the file's last records a
    moment after `run.finish()` returns."""
    runs = wait_for(lambda: [r for r in read_runs(state_dir) if r.exited], DEADLINE,
                    "the finished run on disk")
    assert len(runs) == 1 == len(read_runs(state_dir)), [r.path for r in runs]
    return runs[0]


def history_rows(run: OfflineRun, **match: Any) -> list[dict[str, Any]]:
    return [h for h in run.history if all(h.get(k) == v for k, v in match.items())]


# -- what lands in the run ----------------------------------------------------------------------


def test_every_checkpoint_lands_with_its_url_metrics_table_and_reference(
        tmp_path: Path, state_dir: Path) -> None:
    output_dir = tmp_path / "out"
    meta = MemoryMeta()
    losses = {50: 1.0, 100: 0.8, 150: 0.9}
    records = [make_record(s, eval_loss=loss) for s, loss in losses.items()]
    final = make_record(150, eval_loss=0.85, kind=Kind.FINAL)
    tracker = WandbTracker(offline_config(state_dir, output_dir=output_dir, wait_for_run_info=20,
                                          config={"repo_prefix": "ner"}),
                           meta, queue_depth=lambda: 2)
    # The trainer writes its run info after the uploader started: the worker waits for it.
    info = start_run(output_dir, base_model="tiny", resume=False, wandb_project="proj-x",
                     wandb_group="group-y")
    for record in [*records, final]:
        tracker.verified(make_result(record))
    tracker.failed(make_record(200, state=State.FAILED, attempts=3), TransientError("503"))
    assert tracker.close(DEADLINE)
    assert tracker.errors == 0 and tracker.dropped == 0

    run = only_run(state_dir)
    assert run.path.parent == tracker.run_dir and tracker.run_dir.parent == state_dir / "wandb"
    assert (run.run_id, run.project, run.group, run.job_type) == (
        meta.values[RUN_ID_KEY], "proj-x", "group-y", "upload")
    assert run.config["repo_prefix"] == "ner" and run.config["run_id"] == info.run_id
    for record in [*records, final]:
        (row,) = history_rows(run, checkpoint_url=record.url)
        assert row["checkpoint_step"] == record.step
        assert row["upload_bytes"] == 3_000_000 and row["upload_MBps"] == pytest.approx(1.5)
        assert row["upload_seconds"] == 2.0 and row["attempts"] == 1
        assert row["lag_seconds"] == pytest.approx(12.5) and row["queue_depth"] == 2
    (failure,) = history_rows(run, checkpoint_step=200, upload_failed=1)
    assert failure["upload_error_class"] == "TransientError" and failure["attempts"] == 3

    # Each reference is pinned to the verified commit, not to the repo's moving head.
    by_url = {next(iter(a.references.values())): a for a in run.artifacts if a.type == "model"}
    assert set(by_url) == {f"{r.url}/tree/{r.commit_sha}" for r in [*records, final]}
    by_url = {url.split("/tree/")[0]: a for url, a in by_url.items()}
    expected = {50: {"step-50", "best"}, 100: {"step-100", "best"}, 150: {"step-150"}}
    for record in records:
        artifact = by_url[record.url]
        assert set(artifact.aliases) - {"latest"} == expected[record.step]
        assert artifact.name == f"checkpoints-{info.run_id}"
        assert artifact.metadata["files"] == [
            {"path": f.path, "size": f.size, "sha256": f.sha256}
            for f in make_result(record).files]
    assert set(by_url[final.url].aliases) - {"latest"} == {"final"}

    table = last_table(run)
    assert [(r[0], r[1], r[4]) for r in table["data"]] == [
        (50, "checkpoint", records[0].url), (100, "checkpoint", records[1].url),
        (150, "checkpoint", records[2].url), (150, "final", final.url)]
    assert table["columns"] == ["step", "kind", "eval_loss", "repo_id", "url", "state"]


def last_table(run: OfflineRun) -> dict[str, Any]:
    """Every row the checkpoint table's logs sent, in order. The table is INCREMENTAL: a row is
    sent once, so a table re-sent whole after each upload shows here as repeated rows."""
    paths = [h["checkpoints/path"] for h in run.history if "checkpoints/path" in h]
    assert paths, "no checkpoint table was logged"
    tables = [json.loads((run.path.parent / "files" / p).read_text()) for p in paths]
    return {"columns": tables[-1]["columns"], "data": [row for t in tables for row in t["data"]]}


def test_without_run_info_the_group_falls_back_to_the_run_id_and_the_table_keeps_history(
        tmp_path: Path, state_dir: Path) -> None:
    earlier = make_record(10, eval_loss=0.5)  # verified by an earlier uploader session
    tracker = WandbTracker(offline_config(state_dir, output_dir=tmp_path / "none"), MemoryMeta(),
                           records=lambda: [earlier])
    record = make_record(20, eval_loss=0.7)
    tracker.verified(make_result(record, with_files=False))
    assert tracker.close(DEADLINE)

    run = only_run(state_dir)
    assert run.group == RUN_ID and run.project == "llama3-medical-ner"
    (artifact,) = [a for a in run.artifacts if a.type == "model"]
    assert set(artifact.aliases) - {"latest"} == {"step-20"}  # 0.7 is not below 0.5
    assert artifact.metadata["files"][0] == {"path": "adapter_model.safetensors", "size": 2000,
                                             "sha256": None}
    assert [r[0] for r in last_table(run)["data"]] == [10, 20]


def test_the_reference_never_fetches_the_hub_url(state_dir: Path) -> None:
    # A listening socket that nobody accepts on: any connection attempt (a checksum request)
    # completes in the kernel's backlog, where a non-blocking accept finds it afterwards.
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/alice/private-repo"
        tracker = WandbTracker(offline_config(state_dir), MemoryMeta())
        tracker.verified(make_result(make_record(5, url=url)))
        assert tracker.close(5.0)  # a fetch would hang here: nobody answers on this socket
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    (artifact,) = [a for a in only_run(state_dir).artifacts if a.type == "model"]
    assert artifact.references == {"ner-checkpoint-5": f"{url}/tree/{5:040x}"}


# -- W&B failing never reaches the upload path --------------------------------------------------


def test_wandb_init_failing_is_counted_and_never_raised(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", down)
    tracker = WandbTracker(offline_config(state_dir), MemoryMeta())
    wait_for(lambda: tracker.errors >= 1, DEADLINE, "the failed init to be counted")
    started = time.monotonic()
    tracker.verified(make_result(make_record(1)))
    tracker.failed(make_record(2), TransientError("boom"))
    assert time.monotonic() - started < INSTANT
    wait_for(lambda: tracker.processed == 2, DEADLINE, "both events handled")
    assert tracker.dropped == 2 and tracker.run_dir is None
    assert tracker.close(DEADLINE)


def test_wandb_log_raising_is_counted_and_the_rest_is_still_logged(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb.sdk.wandb_run import Run

    def broken(self: Run, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("W&B backend error")

    monkeypatch.setattr(Run, "log", broken)
    tracker = WandbTracker(offline_config(state_dir), MemoryMeta(),
                           queue_depth=lambda: 1 // 0)
    tracker.verified(make_result(make_record(7)))
    assert tracker.close(DEADLINE)
    assert tracker.errors == 2  # queue_depth and log; the artifact still went out
    run = only_run(state_dir)
    assert run.exited and [a.aliases for a in run.artifacts if a.type == "model"]


def test_a_hanging_wandb_never_delays_verified_and_close_is_bounded(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb.sdk.wandb_run import Run

    release = threading.Event()
    entered = threading.Event()

    def hangs(self: Run, *args: Any, **kwargs: Any) -> None:
        entered.set()
        release.wait(DEADLINE)

    monkeypatch.setattr(Run, "log", hangs)
    tracker = WandbTracker(offline_config(state_dir), MemoryMeta())
    try:
        tracker.verified(make_result(make_record(1)))
        wait_for(entered.is_set, DEADLINE, "the worker to be stuck in run.log")
        for step in (2, 3, 4):
            started = time.monotonic()
            tracker.verified(make_result(make_record(step)))
            assert time.monotonic() - started < INSTANT
        started = time.monotonic()
        assert tracker.close(0.5) is False
        assert time.monotonic() - started < 2.0
        assert tracker.errors == 1  # the close that gave up
    finally:
        release.set()
    wait_for(lambda: not tracker.running, DEADLINE, "the released worker to finish")


# -- restarts ------------------------------------------------------------------------------------

CHILD = """
import sys, threading
from pathlib import Path
from tests.support.wandb_records import read_run
from tests.support.waiting import wait_for
from tests.uploader.test_tracking import FAST, make_record, make_result, offline_config
from uploader.state import StateStore
from uploader.tracking import WandbTracker

state_dir, step = Path(sys.argv[1]), int(sys.argv[2])
tracker = WandbTracker(offline_config(state_dir), StateStore.open(state_dir))
tracker.verified(make_result(make_record(step)))
wait_for(lambda: tracker.run_dir and any(h.get("checkpoint_step") == step for h in read_run(
    tracker.run_dir / f"run-{tracker.run_id}.wandb").history), 30, "the row on disk")
print("READY", flush=True)
threading.Event().wait()
"""


def run_then_kill(state_dir: Path, step: int, log_path: Path) -> None:
    """An uploader session that ends with kill -9 once its row is on disk."""
    # Without WANDB_SERVICE: wandb puts its service's address there once it started in this
    # process, and a child would then log through our wandb-core instead of its own.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(state_dir), str(step)],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**env, "PYTHONPATH": str(REPO_ROOT)})
    try:
        wait_for(lambda: "READY" in log_path.read_text() or proc.poll() is not None, DEADLINE,
                 "the child's row to be flushed")
        assert proc.poll() is None, log_path.read_text()
    finally:
        proc.kill()
        proc.wait(DEADLINE)


def test_restarts_resume_one_wandb_run(tmp_path: Path, state_dir: Path) -> None:
    for step in (10, 20, 30, 40):
        if step in (20, 40):
            run_then_kill(state_dir, step, tmp_path / f"child-{step}.log")
            continue
        with StateStore.open(state_dir) as store:
            tracker = WandbTracker(offline_config(state_dir), store)
            tracker.verified(make_result(make_record(step)))
            assert tracker.close(DEADLINE)

    with StateStore.open(state_dir, readonly=True) as store:
        stored = store.meta_get(RUN_ID_KEY)
    runs = wait_for(lambda: [r.exited for r in read_runs(state_dir)] == [True, False] * 2 and
                    read_runs(state_dir), DEADLINE, "two finished and two killed runs on disk")
    assert stored and {r.run_id for r in runs} == {stored}
    assert [[h["checkpoint_step"] for h in r.history if "checkpoint_url" in h] for r in runs] == [
        [10], [20], [30], [40]]


# -- secrets ----------------------------------------------------------------------------------


def test_no_secret_reaches_any_file_of_the_run(
        tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch, wandb_home: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_CANARY)  # wandb sees the real environment too
    monkeypatch.setenv("WANDB_API_KEY", WANDB_CANARY)
    environ = {"HF_TOKEN": HF_CANARY, "WANDB_API_KEY": WANDB_CANARY, "WANDB_MODE": "offline"}
    settings = UploaderSettings(output_dir=tmp_path / "out", state_dir=state_dir)
    dirty = {**settings.public_config(), "wandb_api_key": WANDB_CANARY,
             "hub": {"Authorization": f"Bearer {HF_CANARY}",
                     "endpoint": f"https://alice:{WANDB_CANARY}@hub.example"},
             "note": f"token is {HF_CANARY}", "others": ["hf_UnknownTokenShape123456789"]}
    tracker = tracking_from_env(environ, settings, MemoryMeta(), lambda: 0, config=dirty, **FAST)
    assert isinstance(tracker, WandbTracker)
    tracker.verified(make_result(make_record(1)))
    tracker.failed(make_record(2), TransientError(f"failed with {HF_CANARY}"))
    assert tracker.close(DEADLINE)

    run = only_run(state_dir)
    assert run.config["repo_prefix"] == settings.repo_prefix  # the settings did get through
    assert run.config["note"] == "token is ***" and "wandb_api_key" not in run.config
    assert run.config["hub"] == {"endpoint": "https://hub.example"}  # no Authorization either
    files = [p for root in (state_dir, wandb_home) for p in root.rglob("*")
             if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".wandb" for p in files)
    for path in files:
        data = path.read_bytes()
        for canary in (HF_CANARY, WANDB_CANARY, "hf_UnknownTokenShape"):
            assert canary.encode() not in data, f"{canary} in {path}"


def test_scrub_config_drops_credential_keys_and_redacts_token_shaped_strings() -> None:
    scrubbed = scrub_config({"api_key": "x", "password": "y", "nested": {"hf_token": "z"},
                             "keep_last": 2, "url": "https://u:p@h/x", "n": None,
                             "list": ("hf_AbCdEfGh12345678", "ok")}, secrets=["ok"])
    assert scrubbed == {"nested": {}, "keep_last": 2, "url": "https://h/x", "n": None,
                        "list": ["***", "***"]}


# -- off ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "mode"), [
    ({"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, Mode.DISABLED),
    ({"WANDB_MODE": "offline"}, Mode.OFFLINE),
    ({}, Mode.DISABLED),  # online without a key
    ({"WANDB_MODE": "online", "WANDB_API_KEY": "k"}, Mode.ONLINE),
    ({"WANDB_MODE": "bogus", "WANDB_API_KEY": "k"}, Mode.DISABLED),
])
def test_wandb_mode(environ: dict[str, str], mode: Mode, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    assert wandb_mode(environ) is mode


DISABLED_CHILD = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from uploader.errors import TransientError
from uploader.settings import UploaderSettings
from uploader.tracking import tracking_from_env

settings = UploaderSettings(output_dir=Path(sys.argv[1]))
meta = SimpleNamespace(meta_get=lambda key: None, meta_set=lambda key, value: None)
tracker = tracking_from_env({"WANDB_MODE": "disabled"}, settings, meta, lambda: 0)
record = SimpleNamespace(step=1, url="https://hub.example/alice/x")
tracker.verified(SimpleNamespace(record=record, seconds=1.0, bytes=1, adopted=False))
tracker.failed(record, TransientError("x"))
print(json.dumps({"type": type(tracker).__name__, "closed": tracker.close(1.0),
                  "wandb_imported": "wandb" in sys.modules}))
"""


def test_disabled_is_a_no_op_that_never_imports_wandb(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "-c", DISABLED_CHILD, str(tmp_path / "out")],
                          cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "type": NoTracking.__name__, "closed": True, "wandb_imported": False}
    assert not (tmp_path / "out").exists()  # nothing written, not even a state dir
