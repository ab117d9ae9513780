"""`backfill`: one pass of the same pipeline as `watch`, then exit.

Uploads everything complete that is not verified - failed, never seen, or with the state lost -
waiting out settle windows first. Exit 0 when every complete folder is verified, 1 otherwise (an
unreachable endpoint after its retries is 1). `--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack

from shared.layout import list_folders
from uploader.cli import EXIT_FAILED, EXIT_OK
from uploader.cli.console import attach_events, one_pass
from uploader.detect import CompletionDetector, Verdict
from uploader.logs import setup_logging
from uploader.pipeline import FINISHED, IMMEDIATE_REUPLOADS, Pipeline
from uploader.service import check_output_dir
from uploader.settings import UploaderSettings
from uploader.state import DB_FILENAME, State, StateStore

log = logging.getLogger("uploader.backfill")

POLL = 0.5
# Past the settle window, a folder that is still not complete is left for a later run.
SETTLE_MARGIN = 2.0


def run(settings: UploaderSettings) -> int:
    if settings.dry_run:
        setup_logging(settings.log_level, settings.log_format)
        return _plan(settings)
    with ExitStack() as stack:
        opened, stop = one_pass(settings, stack)
        if opened is None:
            return EXIT_FAILED
        attach_events(opened, settings, stack)
        incomplete = _settle(opened.pipeline, settings, stop)
        _upload_all(opened.pipeline, stop)
        return _verdict(opened.pipeline, incomplete)


def _settle(pipeline: Pipeline, settings: UploaderSettings, stop: threading.Event) -> set[str]:
    deadline = time.monotonic() + settings.settle_seconds + SETTLE_MARGIN
    while True:
        detections = pipeline.scan()
        waiting = {n for n, d in detections.items() if d.verdict is Verdict.NOT_YET}
        if not waiting or time.monotonic() >= deadline or stop.is_set():
            return waiting
        stop.wait(POLL)


def _upload_all(pipeline: Pipeline, stop: threading.Event) -> None:
    """Every unfinished record, backoff and 'permanent' flags ignored: a human asked for it."""
    for record in pipeline.records():
        for _ in range(IMMEDIATE_REUPLOADS):
            if stop.is_set() or record.state in FINISHED:
                break
            record = pipeline.upload(record)
            if record.state is not State.PENDING:
                break


def _verdict(pipeline: Pipeline, incomplete: set[str]) -> int:
    records = pipeline.records()
    unfinished = [r for r in records if r.state not in FINISHED]
    for record in unfinished:
        log.error("not uploaded", extra={"step": record.step, "repo_id": record.repo_id,
                                         "state": record.state, "error": record.last_error})
    for name in sorted(incomplete):
        log.error("folder never completed", extra={"folder": name})
    verified = sum(r.state is State.VERIFIED for r in records)
    log.info("backfill done", extra={"verified": verified, "unfinished": len(unfinished)})
    return EXIT_FAILED if unfinished or incomplete else EXIT_OK


def _plan(settings: UploaderSettings) -> int:
    """What a real backfill would do, from the local state alone (no Hub, no lock, no writes)."""
    check_output_dir(settings, must_exist=True)
    detector = CompletionDetector(settings.output_dir, settings.settle_seconds)
    state_dir = settings.resolved_state_dir
    store = (StateStore.open(state_dir, readonly=True)
             if (state_dir / DB_FILENAME).exists() else None)
    try:
        for ref in list_folders(settings.output_dir):
            detection = detector.check(ref)
            version = detection.version
            known = store.by_key(version.version_key) if (store and version) else None
            if detection.verdict is not Verdict.COMPLETE:
                action = f"wait ({detection.reason})"
            elif known is not None and known.state in FINISHED:
                action = f"skip ({known.state}: {known.repo_id})"
            else:
                action = "upload" + (f" to {known.repo_id}" if known else "")
            print(f"{ref.name:<20} {action}")
    finally:
        if store is not None:
            store.close()
    return EXIT_OK
