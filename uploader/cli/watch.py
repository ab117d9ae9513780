"""`watch`: the sidecar. Scan, then upload every completed checkpoint until stopped.

On SIGTERM/SIGINT it stops taking work, gives the upload in flight `--drain-grace` seconds to
finish, records state and exits 0; an abandoned upload is redone (same repo id) on restart or by
`backfill`. With `--exit-when-done` it exits once the run has ended (`uploader.run_end`: the
run info's outcome, or for a trainer without run info the newest checkpoint at `max_steps`
followed by `--run-end-grace`) and everything present is verified (0), or some upload failed
permanently (1).

With `--prune`, local checkpoints are deleted once verified (see `uploader.prune`): a pass runs
right after each completed save, and after each verification once the run has ended. Leave the
trainer's `save_total_limit` unset then: two deleters of one directory gain nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import ExitStack

from shared.layout import Kind
from uploader.auth_watch import AuthFailures
from uploader.cli import EXIT_FAILED, EXIT_OK
from uploader.cli.console import TRACKING_CLOSE_TIMEOUT, attach_events, stop_on_signals
from uploader.errors import AuthError
from uploader.events import FanoutEvents
from uploader.logs import quiet_progress_bars, setup_logging
from uploader.pipeline import Pipeline, pending_work
from uploader.prune import PrunePolicy, Pruner, SpaceWatch
from uploader.run_end import RunEnd, run_ended
from uploader.service import Opened, open_pipeline
from uploader.settings import PruneCheck, UploaderSettings
from uploader.state import State
from uploader.watch import WatchConfig, Watcher

log = logging.getLogger("uploader.watch")

HEARTBEAT_INTERVAL = 5.0
TICK = 0.5
# How often the run-end evidence is read (run info, or the newest trainer_state.json).
RUN_END_CHECK_INTERVAL = 2.0


def run(settings: UploaderSettings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    quiet_progress_bars(settings.log_format)
    stop = threading.Event()
    stop_on_signals(stop)
    with ExitStack() as stack:
        opened = open_pipeline(settings, stack, environ=os.environ, wait_for_hub=True, stop=stop)
        if stop.is_set():
            return EXIT_OK
        tracker = attach_events(opened, settings, stack)
        pruner = _pruner(opened, settings)
        watcher = Watcher(opened.pipeline, WatchConfig(
            output_dir=settings.output_dir, poll=settings.poll,
            poll_interval=settings.poll_interval, scan_interval=settings.scan_interval,
            settle_seconds=settings.settle_seconds, concurrency=settings.concurrency), stop,
            pruner=pruner)
        watcher.start()
        log.info("watching", extra={"output_dir": str(settings.output_dir),
                                    "namespace": opened.namespace, "pid": os.getpid(),
                                    "prune": settings.prune})
        code, refused = _supervise(watcher, opened.pipeline, settings, stop)
        if not watcher.join(settings.drain_grace):
            log.warning("upload in flight abandoned after the grace period; it is redone on "
                        "restart or by `backfill`", extra={"grace": settings.drain_grace})
            tracker.close(TRACKING_CLOSE_TIMEOUT)  # os._exit skips the ExitStack
            logging.shutdown()
            os._exit(code)  # the abandoned HTTP call cannot be interrupted; state is recorded
        log.info("stopped", extra={"exit_code": code})
        if refused is not None:
            raise refused  # printed as the one `error:` line, exit 1
        return code


def _pruner(opened: Opened, settings: UploaderSettings) -> Pruner:
    """Pruning (when on) and the free-space warning (always), wired to the pipeline's events."""
    def ended() -> bool:
        return run_ended(settings.output_dir) is not None

    pruner = Pruner(opened.pipeline, PrunePolicy(keep_last=settings.keep_last,
                                                 prune_best=settings.prune_best,
                                                 metric=settings.metric,
                                                 deep=settings.prune_check is PruneCheck.DEEP),
                    enabled=settings.prune,
                    space=SpaceWatch(settings.output_dir, settings.free_space_warning),
                    run_ended=ended)
    pruner.recover()
    opened.pipeline.events = FanoutEvents(opened.pipeline.events, pruner)
    return pruner


def _supervise(watcher: Watcher, pipeline: Pipeline, settings: UploaderSettings,
               stop: threading.Event) -> tuple[int, AuthError | None]:
    """The caller's thread: heartbeat for `status --health`, and the exit-when-done check
    (which also ends a finished run whose only failures are refused credentials)."""
    auth = AuthFailures(settings.auth_failure_grace)
    next_beat = 0.0
    end = _EndWatch(settings)
    ended_scan: int | None = None
    while not stop.wait(TICK):
        if time.monotonic() >= next_beat:
            pipeline.heartbeat(watcher.last_loop)
            next_beat = time.monotonic() + HEARTBEAT_INTERVAL
        if not settings.exit_when_done:
            continue
        if ended_scan is None:
            if not end.ended():
                continue
            # A full scan must start after we saw the end, or the final folder could be missed.
            ended_scan = watcher.full_scans + 1
            watcher.wakeups.add(None)
        code = _done(watcher, pipeline, settings, ended_scan, end.since)
        if code is not None:
            stop.set()
            return code, None
        refused = auth.check(pipeline.records())
        if refused is not None:
            stop.set()
            return EXIT_FAILED, refused
    return EXIT_OK, None


class _EndWatch:
    """Reads the run-end evidence every few seconds; weak evidence must hold for the grace."""

    def __init__(self, settings: UploaderSettings) -> None:
        self.settings = settings
        self.since = 0.0  # monotonic time the evidence was first seen
        self._seen: RunEnd | None = None
        self._next = 0.0

    def ended(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + RUN_END_CHECK_INTERVAL
        end = run_ended(self.settings.output_dir)
        if end is None:
            if self._seen is not None:
                log.info("run-end evidence gone; still watching", extra={"was": self._seen.detail})
            self._seen = None
            return False
        if self._seen is None:
            self._seen, self.since = end, now
            if end.needs_grace:
                log.info("training run looks ended; waiting out the run-end grace", extra={
                    "evidence": end.detail, "grace": self.settings.run_end_grace})
        if end.needs_grace and now - self.since < self.settings.run_end_grace:
            return False
        log.info("training run ended; finishing uploads",
                 extra={"outcome": end.outcome, "evidence": end.detail})
        return True


def _done(watcher: Watcher, pipeline: Pipeline, settings: UploaderSettings, ended_scan: int,
          ended_at: float) -> int | None:
    if watcher.full_scans < ended_scan or watcher.busy:
        return None
    records = pipeline.records()
    if pending_work(records):
        return None
    settling = time.monotonic() - ended_at < settings.run_end_grace
    if watcher.incomplete and settling:
        return None
    # The trainer is gone: a last pass frees what the final verifications allowed, and may
    # find a damaged remote copy, which is then uploaded again before we exit.
    if watcher.pruner is not None and watcher.pruner.enabled:
        if watcher.pruner.run_pass().reopened:
            watcher.work.set()
            return None
        records = pipeline.records()
        if pending_work(records):  # a pass of the prune loop reopened a copy meanwhile
            watcher.work.set()
            return None
    failed = [r for r in records if r.state is State.FAILED and r.permanent]
    for record in failed:
        log.error("upload failed permanently", extra={"step": record.step,
                                                      "repo_id": record.repo_id,
                                                      "error": record.last_error})
    if watcher.incomplete:
        log.error("folders never completed", extra={"folders": sorted(watcher.incomplete)})
    verified = [r for r in records if r.state in (State.VERIFIED, State.PRUNED)]
    log.info("all done", extra={"verified": len(verified),
                                "final": any(r.kind is Kind.FINAL for r in verified)})
    return EXIT_FAILED if failed or watcher.incomplete else EXIT_OK
