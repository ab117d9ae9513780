"""What the CLI prints for people: the seed's upload block, the progress line on a terminal, and
signal handling for the verbs."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from typing import TextIO

from uploader.errors import UploaderError
from uploader.events import FanoutEvents, UploadResult
from uploader.pipeline import pending_work
from uploader.progress import TRACKER, ProgressLine, human_bytes, progress_wanted
from uploader.service import Opened
from uploader.settings import UploaderSettings
from uploader.state import Record

log = logging.getLogger("uploader.console")

RULE = "=" * 80
TRACKING_CLOSE_TIMEOUT = 10.0


class ConsoleEvents:
    """Prints one block per verified upload, like the seed's callback did (but after verifying).

    With `--log-format json` the block is one log record instead (every line is JSON then).
    With a progress line (`start_progress`), the checkpoint's line is cleared first, and the
    block prints where the lines were.
    """

    def __init__(self, stream: TextIO | None = None, fmt: str | None = None,
                 progress: ProgressLine | None = None) -> None:
        from uploader.logs import current_format

        self.stream = stream or sys.stdout
        self.fmt = fmt or current_format()
        self.progress = progress
        self._lock = threading.Lock()

    def verified(self, result: UploadResult) -> None:
        rec = result.record
        if self.progress is not None:
            self.progress.finish(rec.repo_id)
        rate = result.bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
        if self.fmt == "json":
            log.info("checkpoint on the Hub", extra={
                "step": rec.step, "kind": str(rec.kind), "repo_id": rec.repo_id, "url": rec.url,
                "bytes": result.bytes, "seconds": round(result.seconds, 3),
                "MBps": round(rate, 3), "adopted": result.adopted})
            return
        what = "Final LoRA adapter" if rec.kind == "final" else "Checkpoint"
        how = "already on the Hub, adopted" if result.adopted else "uploaded and verified"
        lines = [RULE, f"{what} {how}", f"   Step: {rec.step}", f"   Repo: {rec.repo_id}",
                 f"   URL: {rec.url}",
                 f"   Size: {human_bytes(result.bytes)} in {result.seconds:.1f} s "
                 f"({rate:.1f} MB/s)", RULE]
        with self._lock, self.progress.paused() if self.progress else nullcontext():
            print("\n".join(lines), file=self.stream, flush=True)

    def failed(self, record: Record, error: UploaderError) -> None:
        # Logged by the pipeline; the block is for successes. The line goes until a retry.
        if self.progress is not None:
            self.progress.finish(record.repo_id)


def start_progress(fmt: str, stack: ExitStack, stream: TextIO | None = None,
                   environ: Mapping[str, str] | None = None) -> ProgressLine | None:
    """On a terminal with text logs: one line per checkpoint in flight on stderr (bytes, rate,
    ETA), instead of the library's per-file bars; the log handler writes around it. None (and
    nothing changed) on a pipe, with JSON logs, or when HF_HUB_DISABLE_PROGRESS_BARS is set."""
    import os

    stream = stream or sys.stderr
    if not progress_wanted(fmt, stream, os.environ if environ is None else environ):
        return None
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # the line replaces them; its bytes come from the same reports
    line = ProgressLine(TRACKER, stream).start()
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is stream]
    guarded = line.guard(stream)
    for handler in handlers:
        handler.setStream(guarded)
    TRACKER.enabled = True

    def stop() -> None:
        TRACKER.enabled = False
        for handler in handlers:
            if handler.stream is guarded:
                handler.setStream(stream)
        line.stop()

    stack.callback(stop)
    return line


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT only set the event; the loops notice it and drain."""

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def attach_events(opened: Opened, settings: UploaderSettings, stack: ExitStack):
    """The upload block on stdout plus W&B (a no-op when W&B is off); returns the tracker."""
    import os

    from uploader.tracking import tracking_from_env

    pipeline = opened.pipeline
    tracker = tracking_from_env(os.environ, settings, opened.store,
                                queue_depth=lambda: len(pending_work(pipeline.records())),
                                records=pipeline.records)
    stack.callback(tracker.close, TRACKING_CLOSE_TIMEOUT)  # LIFO: closes before the store
    progress = start_progress(settings.log_format, stack)
    pipeline.events = FanoutEvents(ConsoleEvents(fmt=settings.log_format, progress=progress),
                                   tracker)
    return tracker


def one_pass(settings: UploaderSettings, stack: ExitStack) -> tuple[Opened | None, threading.Event]:
    """What `backfill` and `verify` start with: logs, signals, and the pipeline opened without
    waiting for the Hub (None, logged, when it stays unreachable after its retries)."""
    import os

    from uploader.errors import TransientError
    from uploader.logs import quiet_progress_bars, setup_logging
    from uploader.service import open_pipeline

    setup_logging(settings.log_level, settings.log_format)
    quiet_progress_bars(settings.log_format)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        return open_pipeline(settings, stack, environ=os.environ, wait_for_hub=False,
                             stop=stop), stop
    except TransientError as exc:
        log.error("Hub endpoint unreachable",
                                                extra={"error": exc.one_line()})
        return None, stop
