"""What the CLI prints for people: the seed's upload block, and signal handling for the verbs."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack
from typing import TextIO

from uploader.errors import UploaderError
from uploader.events import FanoutEvents, UploadResult
from uploader.pipeline import pending_work
from uploader.service import Opened
from uploader.settings import UploaderSettings
from uploader.state import Record

log = logging.getLogger("uploader.console")

RULE = "=" * 80
TRACKING_CLOSE_TIMEOUT = 10.0


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} TB"


class ConsoleEvents:
    """Prints one block per verified upload, like the seed's callback did (but after verifying).

    With `--log-format json` the block is one log record instead (every line is JSON then).
    """

    def __init__(self, stream: TextIO | None = None, fmt: str | None = None) -> None:
        from uploader.logs import current_format

        self.stream = stream or sys.stdout
        self.fmt = fmt or current_format()
        self._lock = threading.Lock()

    def verified(self, result: UploadResult) -> None:
        rec = result.record
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
        with self._lock:
            print("\n".join(lines), file=self.stream, flush=True)

    def failed(self, record: Record, error: UploaderError) -> None:
        pass  # logged by the pipeline; the block is for successes


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
    pipeline.events = FanoutEvents(ConsoleEvents(fmt=settings.log_format), tracker)
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
