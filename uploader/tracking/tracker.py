"""The W&B worker: one thread owns the wandb run; the upload thread only enqueues.

    verified() / failed()     upload thread: put on a bounded queue, return (a full queue drops)
    worker                    wait briefly for run info -> wandb.init -> per event: history
                              row + checkpoint table rows, reference artifact
    close(timeout)            drain, finish the run; gives up waiting at the deadline

Which run: when W&B is online and the training run's W&B id is known (`WANDB_RUN_ID`, or the
trainer's run info), the uploader writes into that same run as a secondary writer (W&B's shared
mode: `mode="shared"`, `x_primary=False`, `x_label="uploader"`), so `checkpoint_step` and
`checkpoint_url` sit on the training run's page as the seed had them. Offline, where a shared
run is impossible, or without that id, it writes its own `upload` run (id kept in the state,
resumed after a restart) in the training run's project and group, and says so at start.

`import wandb` and `wandb.init` happen in the worker too, so neither the import time nor a slow
W&B can delay an upload. Every W&B error is logged and counted, never raised.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared.run_info import RunInfo, RunInfoError, read_run_info
from uploader.tracking import rows
from uploader.tracking.config import Mode, TrackingConfig, scrub_config, scrub_str, tracking_config

if TYPE_CHECKING:
    from uploader.errors import UploaderError
    from uploader.events import UploadResult
    from uploader.settings import UploaderSettings
    from uploader.state import Record

log = logging.getLogger(__name__)

RUN_ID_KEY = "wandb_run_id"
JOB_TYPE = "upload"
SHARED_LABEL = "uploader"  # x_label: names the uploader's system metrics in a shared run
# The trainer's default project (trainer/settings.py); the uploader image has no trainer package.
DEFAULT_PROJECT = "llama3-medical-ner"
QUEUE_SIZE = 1000  # events come per checkpoint: a full queue means W&B is stuck
RUN_INFO_POLL = 0.2
IDLE_POLL = 0.5  # the worker re-checks for close this often when the queue is empty
INIT_RETRY_INITIAL = 30.0
INIT_RETRY_MAX = 600.0


class MetaStore(Protocol):
    """The part of `StateStore` that keeps the W&B run id across restarts."""

    def meta_get(self, key: str) -> str | None: ...

    def meta_set(self, key: str, value: str) -> None: ...


class Tracker(Protocol):
    """The pipeline's `Events`, plus what the CLI needs at shutdown and to say where runs are."""

    @property
    def errors(self) -> int: ...

    @property
    def run_dir(self) -> Path | None: ...

    def verified(self, result: UploadResult) -> None: ...

    def failed(self, record: Record, error: UploaderError) -> None: ...

    def close(self, timeout: float) -> bool: ...


class NoTracking:
    """W&B off: wandb is never imported and nothing is written."""

    errors = 0
    run_dir: Path | None = None

    def verified(self, result: UploadResult) -> None:
        pass

    def failed(self, record: Record, error: UploaderError) -> None:
        pass

    def close(self, timeout: float) -> bool:
        return True


def tracking_from_env(environ: Mapping[str, str], settings: UploaderSettings, meta: MetaStore,
                      queue_depth: Callable[[], int] | None = None,
                      records: Callable[[], Sequence[Record]] | None = None,
                      **overrides: Any) -> Tracker:
    """A started `WandbTracker`, or `NoTracking` when W&B is off."""
    config = tracking_config(environ, settings, **overrides)
    if config.mode is Mode.DISABLED:
        return NoTracking()
    return WandbTracker(config, meta, queue_depth, records)


@dataclass(frozen=True)
class _Verified:
    result: UploadResult


@dataclass(frozen=True)
class _Failed:
    record: Record
    error_class: str


_CLOSE = object()


class WandbTracker:
    """The uploader's W&B run, fed by the pipeline's events.

    `queue_depth` counts the records still waiting (called in the worker). `records` (e.g.
    `Pipeline.records`) seeds the table and the `best` alias with what earlier uploader sessions
    verified; without it both start from this session's events.
    """

    def __init__(self, config: TrackingConfig, meta: MetaStore,
                 queue_depth: Callable[[], int] | None = None,
                 records: Callable[[], Sequence[Record]] | None = None) -> None:
        self.config = config
        self._meta = meta
        self._queue_depth = queue_depth
        self._records = records
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_SIZE)
        self._closing = threading.Event()
        self._counts_lock = threading.Lock()
        self.errors = 0  # W&B calls that failed (and a close that timed out)
        self.dropped = 0  # events not sent: queue full, closed, or no run
        self.processed = 0  # events the worker has handled, sent or not
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        # Owned by the worker thread from here on.
        self._run: Any = None
        self._wandb: Any = None
        self._info: RunInfo | None = None
        self._rows: dict[int, Record] = {}
        self._table: Any = None  # one INCREMENTAL table: each log sends only the new rows
        self.shared = False  # writing into the training run (W&B shared mode)
        self._retry_at = 0.0
        self._retry_wait = INIT_RETRY_INITIAL
        self._thread = threading.Thread(target=self._work, name="wandb-tracker", daemon=True)
        self._thread.start()

    @property
    def runs_dir(self) -> Path:
        return self.config.runs_dir

    @property
    def running(self) -> bool:
        """Whether the worker is still alive (after a close that timed out, it may be)."""
        return self._thread.is_alive()

    # -- the upload thread: enqueue only -------------------------------------------------------

    def verified(self, result: UploadResult) -> None:
        self._offer(_Verified(result))

    def failed(self, record: Record, error: UploaderError) -> None:
        self._offer(_Failed(record, type(error).__name__))

    def _offer(self, item: object) -> None:
        if self._closing.is_set():
            self._count("dropped")
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count("dropped")
            log.warning("W&B is not keeping up; event dropped", extra={"dropped": self.dropped})

    def close(self, timeout: float) -> bool:
        """Send what is queued and finish the run; False when that did not end within timeout."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        # On a full queue the worker still notices `_closing` once the queue runs dry.
        with contextlib.suppress(queue.Full):
            self._queue.put(_CLOSE, timeout=max(deadline - time.monotonic(), 0.001))
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            self._error("close", TimeoutError(f"W&B did not finish within {timeout:g} s; "
                                              f"the run's files stay in {self.runs_dir}"))
            return False
        return True

    # -- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._seed_rows()
            self._info = self._wait_for_run_info()
            self._start_run()
            self._serve()
        except Exception as exc:  # the thread must end quietly, whatever W&B does
            self._error("worker", exc)
        finally:
            self._finish_run()

    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_POLL)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if item is _CLOSE:
                return
            try:
                self._handle(item)
            except Exception as exc:
                self._error("event", exc)
            finally:
                self._count("processed")

    def _handle(self, item: object) -> None:
        # The table rows follow every event, sent or not: a later table catches up.
        if isinstance(item, _Verified):
            self._rows[item.result.record.id] = item.result.record
            if run := self._usable_run():
                self._log_verified(run, item.result)
        elif isinstance(item, _Failed):
            self._rows[item.record.id] = item.record
            if run := self._usable_run():
                run.log(rows.failure_metrics(item.record, item.error_class))

    def _usable_run(self) -> Any:
        run = self._ensure_run()
        if run is None:
            self._count("dropped")
        return run

    def _log_verified(self, run: Any, result: UploadResult) -> None:
        rec = result.record
        best = rows.is_best(rec, self._rows)
        metrics = rows.upload_metrics(result, self._depth())
        metrics[rows.TABLE_KEY] = self._table_with(rec)
        self._call("log", lambda: run.log(metrics))
        if best:
            self._call("summary", lambda: run.summary.update(
                {"best_step": rec.step, "best_eval_loss": rec.eval_loss, "best_url": rec.url}))
        self._call("log_artifact", lambda: self._log_reference(run, result, best))

    def _table_with(self, record: Record) -> Any:
        """The checkpoints table, logged incrementally: rows known at the first log (earlier
        sessions included), then one row per verified upload."""
        if self._table is None:
            self._table = self._wandb.Table(columns=list(rows.TABLE_COLUMNS),
                                            data=rows.table_rows(self._rows),
                                            log_mode="INCREMENTAL")
        else:
            self._table.add_data(*rows.table_row(record))
        return self._table

    def _log_reference(self, run: Any, result: UploadResult, best: bool) -> None:
        rec = result.record
        url = rows.pinned_url(rec)
        if not url:
            log.warning("no URL for this checkpoint; no W&B reference",
                        extra={"step": rec.step, "repo_id": rec.repo_id})
            return
        artifact = self._wandb.Artifact(
            rows.artifact_name(self._train_run_id(), run.id), type=rows.ARTIFACT_TYPE,
            description=f"{rec.repo_id} (step {rec.step})",
            metadata=rows.artifact_metadata(result))
        # checksum=False: repos are private by default, so W&B must not fetch the URL; wandb's
        # HTTPHandler.store_path then records the URL without any request. The manifest's
        # sha256 values in the metadata stand in for the checksum.
        artifact.add_reference(url, name=rows.reference_name(rec), checksum=False)
        run.log_artifact(artifact, aliases=rows.aliases(rec, best))

    # -- starting and finishing the run ---------------------------------------------------------

    def _ensure_run(self) -> Any:
        if self._run is None and not self._closing.is_set() and (
                time.monotonic() >= self._retry_at):
            self._start_run()
        return self._run

    def _start_run(self) -> None:
        try:
            import wandb  # here, not at module level: W&B off must cost no import

            self._wandb = wandb
            shared_id = self._shared_run_id()
            if shared_id is not None:
                args = self._shared_init_args(wandb, shared_id)
            else:
                args = self._init_args(wandb, self._run_id())
            self._run = wandb.init(**args)
            self.shared = shared_id is not None
        except Exception as exc:
            self._error("init", exc)
            self._retry_at = time.monotonic() + self._retry_wait
            self._retry_wait = min(self._retry_wait * 2, INIT_RETRY_MAX)
            return
        self.run_id = str(self._run.id)
        self.run_dir = Path(self._run.settings.sync_dir)
        for name in rows.STEPPED_METRICS:
            self._call("define_metric", lambda name=name: self._run.define_metric(
                name, step_metric="checkpoint_step"))
        log.info("W&B run started", extra={
            "wandb_run_id": self.run_id, "run_dir": str(self.run_dir),
            "mode": "shared" if self.shared else str(self.config.mode),
            "project": self._run.project, "group": self._run.group,
            "into": "the training run" if self.shared else "a separate upload run"})

    def _shared_run_id(self) -> str | None:
        """The training run's W&B id when the uploader can write into it (online only)."""
        train_id = self.config.train_run_id or (self._info.wandb_run_id if self._info else None)
        if self.config.mode is Mode.ONLINE and train_id:
            return train_id
        why = ("W&B is offline and a shared run needs W&B online" if train_id
               else "the training run's W&B id is unknown (no run info, no WANDB_RUN_ID)")
        log.info("checkpoint keys go to a separate upload run in the training run's group, "
                 "not into the training run", extra={"reason": why})
        return None

    def _shared_init_args(self, wandb: Any, train_id: str) -> dict[str, Any]:
        """Join the training run as a secondary writer: no name, group, job type or config of
        ours, so nothing of the training run is overwritten."""
        cfg = self.config
        info = self._info
        settings = wandb.Settings(
            mode="shared", x_primary=False, x_label=SHARED_LABEL, console="off", silent=True,
            save_code=False, disable_git=True, x_disable_stats=not cfg.system_metrics,
            init_timeout=cfg.init_timeout, finish_timeout=cfg.finish_timeout)
        cfg.base_dir.mkdir(parents=True, exist_ok=True)
        return {
            "project": cfg.project or (info.wandb_project if info else None) or DEFAULT_PROJECT,
            "entity": cfg.entity, "id": train_id, "dir": str(cfg.base_dir),
            "settings": settings, "reinit": "create_new",
        }

    def _init_args(self, wandb: Any, run_id: str) -> dict[str, Any]:
        cfg = self.config
        info = self._info
        train_run_id = self._train_run_id()
        config = {**cfg.config, "run_id": train_run_id,
                  "train_wandb_run_id": info.wandb_run_id if info else None}
        settings = wandb.Settings(
            console="off",  # the uploader's own log must not be copied into the run
            silent=True, save_code=False, disable_git=True,
            x_disable_stats=not cfg.system_metrics, init_timeout=cfg.init_timeout,
            finish_timeout=cfg.finish_timeout,
            x_transaction_log_flush_interval=cfg.flush_interval)
        cfg.base_dir.mkdir(parents=True, exist_ok=True)
        return {
            "project": cfg.project or (info.wandb_project if info else None) or DEFAULT_PROJECT,
            "entity": cfg.entity,
            "group": cfg.group or (info.wandb_group if info else None) or train_run_id,
            "job_type": JOB_TYPE, "name": rows.run_name(train_run_id), "id": run_id,
            "resume": "allow", "dir": str(cfg.base_dir), "mode": str(cfg.mode),
            "config": scrub_config(config, cfg.secrets), "settings": settings,
            "reinit": "create_new",
        }

    def _run_id(self) -> str:
        """The stored id, or a new one stored before the run starts (record, then act)."""
        try:
            stored = self._meta.meta_get(RUN_ID_KEY)
            if stored:
                return stored
            new = uuid.uuid4().hex[:12]  # W&B run ids: lowercase letters and digits
            self._meta.meta_set(RUN_ID_KEY, new)
            return new
        except Exception as exc:
            self._error("state", exc)  # a run for this session only, rather than none
            return uuid.uuid4().hex[:12]

    def _finish_run(self) -> None:
        if self._run is None:
            return
        self._call("finish", lambda: self._run.finish(exit_code=0))
        log.info("W&B run finished", extra={"wandb_run_id": self.run_id,
                                            "run_dir": str(self.run_dir),
                                            "errors": self.errors, "dropped": self.dropped})

    def _wait_for_run_info(self) -> RunInfo | None:
        """The trainer writes run info at its start; give it a moment if it is not there yet."""
        if self.config.output_dir is None:
            return None
        deadline = time.monotonic() + self.config.wait_for_run_info
        while True:
            try:
                info = read_run_info(self.config.output_dir)
            except RunInfoError as exc:
                log.warning("run info unreadable; W&B run without it", extra={"error": str(exc)})
                return None
            if info is not None:
                return info
            if time.monotonic() >= deadline or self._closing.is_set():
                log.info("no run info yet; the W&B group falls back to the run id",
                         extra={"output_dir": str(self.config.output_dir)})
                return None
            self._closing.wait(RUN_INFO_POLL)  # a close reads once more, then goes on

    def _train_run_id(self) -> str | None:
        """The training run's id: from its run info, else from the checkpoints' markers."""
        if self._info is not None:
            return self._info.run_id
        return next((r.run_id for r in self._rows.values() if r.run_id), None)

    def _seed_rows(self) -> None:
        if self._records is not None:
            records = self._call("records", self._records) or ()
            self._rows.update({r.id: r for r in records})

    # -- bookkeeping ----------------------------------------------------------------------------

    def _depth(self) -> int | None:
        if self._queue_depth is None:
            return None
        return self._call("queue_depth", self._queue_depth)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            self._error(what, exc)
            return None

    def _error(self, what: str, exc: BaseException) -> None:
        with self._counts_lock:
            self.errors += 1
            errors = self.errors
        log.warning("W&B call failed; uploads are unaffected", extra={
            "call": what, "error": scrub_str(f"{type(exc).__name__}: {exc}", self.config.secrets),
            "errors": errors})

    def _count(self, name: str) -> None:
        with self._counts_lock:
            setattr(self, name, getattr(self, name) + 1)
