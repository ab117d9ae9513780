"""`watch`: the sidecar. Scan, then upload every completed checkpoint until stopped.

On SIGTERM/SIGINT it stops taking work, gives the upload in flight `--drain-grace` seconds to
finish, records state and exits 0; an abandoned upload is redone (same repo id) on restart or by
`backfill`. With `--exit-when-done` it exits once the trainer's run info says the run ended and
everything present is verified (0), or some upload failed permanently (1).

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
from uploader.service import Opened, open_pipeline, read_run
from uploader.settings import UploaderSettings
from uploader.state import State
from uploader.watch import WatchConfig, Watcher

log = logging.getLogger("uploader.watch")

HEARTBEAT_INTERVAL = 5.0
TICK = 0.5


def run(settings: UploaderSettings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    quiet_progress_bars()
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
    def run_ended() -> bool:
        info = read_run(settings)
        return info is not None and info.ended

    pruner = Pruner(opened.pipeline, PrunePolicy(keep_last=settings.keep_last,
                                                 prune_best=settings.prune_best,
                                                 metric=settings.metric),
                    enabled=settings.prune,
                    space=SpaceWatch(settings.output_dir, settings.free_space_warning),
                    run_ended=run_ended)
    pruner.recover()
    opened.pipeline.events = FanoutEvents(opened.pipeline.events, pruner)
    return pruner


def _supervise(watcher: Watcher, pipeline: Pipeline, settings: UploaderSettings,
               stop: threading.Event) -> tuple[int, AuthError | None]:
    """The caller's thread: heartbeat for `status --health`, and the exit-when-done check
    (which also ends a finished run whose only failures are refused credentials)."""
    auth = AuthFailures(settings.auth_failure_grace)
    next_beat = 0.0
    ended_scan: int | None = None
    ended_at: float | None = None
    while not stop.wait(TICK):
        if time.monotonic() >= next_beat:
            pipeline.heartbeat(watcher.last_loop)
            next_beat = time.monotonic() + HEARTBEAT_INTERVAL
        if not settings.exit_when_done:
            continue
        run_info = read_run(settings)
        if run_info is None or not run_info.ended:
            continue
        if ended_scan is None:
            # A full scan must start after we saw the end, or the final folder could be missed.
            ended_scan, ended_at = watcher.full_scans + 1, time.monotonic()
            watcher.wakeups.add(None)
            log.info("training run ended; finishing uploads",
                     extra={"outcome": run_info.outcome})
        code = _done(watcher, pipeline, settings, ended_scan, ended_at or 0.0)
        if code is not None:
            stop.set()
            return code, None
        refused = auth.check(pipeline.records())
        if refused is not None:
            stop.set()
            return EXIT_FAILED, refused
    return EXIT_OK, None


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
