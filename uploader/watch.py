"""The sidecar's loops: filesystem events are hints, the directory listing is the truth.

Three threads, in the shape of watchdog's own examples: the observer fills `wake` with the
folders that saw an event; the detect loop judges them (plus a full scan at start, after an
inotify overflow and every `scan_interval`) and stages complete ones at once; the upload loop
drains due records one at a time in step order. With a pruner, a fourth thread runs a prune pass
each time the detect loop admitted a completed folder (the trainer has just saved and rotated),
and checks free space in between. The caller's thread keeps signals and decides when to stop
(`watch` on SIGTERM or when the run is done, `backfill` after one pass).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from shared.layout import MARKERS_DIRNAME, UPLOADER_DIRNAME, classify
from uploader.detect import Verdict
from uploader.pipeline import Pipeline
from uploader.prune import Pruner

log = logging.getLogger(__name__)

OVERFLOW_MESSAGE = "queue overflowed"
# Re-judge a folder that is not complete yet at least this often even without events: settle
# windows end without any event, and a marker may land on a network filesystem silently.
RECHECK_INTERVAL = 1.0
# Finished (verified) folders re-judged per rescan, in turn: idle cost flat in their number.
# Each costs one stat pass (about 0.2 ms, syscalls) unless it changed; a dir of up to this many
# gets that look every rescan, one of 10,000 within 40 (0.2% of a core at the default interval).
FINISHED_RECHECKS_PER_SCAN = 250
# Free space is checked after every prune pass, and at least this often between them.
SPACE_CHECK_INTERVAL = 30.0


@dataclass(frozen=True)
class WatchConfig:
    output_dir: Path
    poll: bool = False
    poll_interval: float = 5.0
    scan_interval: float = 60.0
    settle_seconds: float = 30.0
    concurrency: int = 1


class Wakeups:
    """Folder names to re-judge; `None` in the set means "rescan everything"."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._names: set[str | None] = set()

    def add(self, name: str | None) -> None:
        with self._cond:
            self._names.add(name)
            self._cond.notify_all()

    def take(self, timeout: float) -> set[str | None]:
        with self._cond:
            if not self._names:
                self._cond.wait(timeout)
            names, self._names = self._names, set()
            return names


class FolderEvents(FileSystemEventHandler):
    """Maps any event under the output dir to the top-level folder it concerns."""

    def __init__(self, output_dir: Path, wakeups: Wakeups) -> None:
        self.output_dir = output_dir.resolve()
        self.wakeups = wakeups

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                name = self._folder_of(Path(str(raw)))
                if name:
                    self.wakeups.add(name)

    def _folder_of(self, path: Path) -> str | None:
        try:
            parts = path.resolve().relative_to(self.output_dir).parts
        except (ValueError, OSError):
            return None
        if not parts or parts[0] == UPLOADER_DIRNAME:
            return None
        if parts[0] == MARKERS_DIRNAME and len(parts) > 1:
            return parts[1].removesuffix(".json")
        return parts[0] if classify(parts[0]) else None


class OverflowAlarm(logging.Handler):
    """watchdog rebuilds its watches after an inotify overflow but never replays the lost
    events, and says so only in a log line: turn that line into a full rescan."""

    def __init__(self, wakeups: Wakeups) -> None:
        super().__init__(logging.WARNING)
        self.wakeups = wakeups

    def emit(self, record: logging.LogRecord) -> None:
        if OVERFLOW_MESSAGE in record.getMessage():
            self.wakeups.add(None)


class Watcher:
    """Runs the detect and upload loops over one pipeline until `stop` is set."""

    def __init__(self, pipeline: Pipeline, config: WatchConfig, stop: threading.Event,
                 pruner: Pruner | None = None) -> None:
        self.pipeline = pipeline
        self.config = config
        self.stop = stop
        self.pruner = pruner
        self.wakeups = Wakeups()
        self.work = threading.Event()
        self.last_loop = time.time()
        self.incomplete: set[str] = set()
        self.full_scans = 0
        self._busy = 0  # upload loops inside a pass
        self._busy_lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._alarm = OverflowAlarm(self.wakeups)
        self._threads: list[threading.Thread] = []

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def start(self) -> None:
        self.config.output_dir.mkdir(parents=True, exist_ok=True)
        self._observer = self._make_observer()
        handler = FolderEvents(self.config.output_dir, self.wakeups)
        # Not recursive: new folders show up in the output dir and markers in `.complete/`;
        # a folder still being written is re-judged every RECHECK_INTERVAL anyway. Watching the
        # whole tree would also watch our own staging and W&B files, one inotify watch each.
        markers = self.config.output_dir / MARKERS_DIRNAME
        markers.mkdir(exist_ok=True)
        for directory in (self.config.output_dir, markers):
            self._observer.schedule(handler, str(directory), recursive=False)
        logging.getLogger("watchdog").addHandler(self._alarm)
        self._observer.start()
        loops = [("detect", self._detect_loop)] + [
            (f"upload-{i}", self._upload_loop) for i in range(self.config.concurrency)]
        if self.pruner is not None:
            loops.append(("prune", self._prune_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"uploader-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _make_observer(self) -> BaseObserver:
        if self.config.poll:
            return PollingObserver(timeout=self.config.poll_interval)
        return Observer()

    def join(self, timeout: float) -> bool:
        """Stop the observer, wait up to `timeout` for the loops; True if they all ended."""
        deadline = time.monotonic() + timeout
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(max(0.0, deadline - time.monotonic()))
        logging.getLogger("watchdog").removeHandler(self._alarm)
        self.wakeups.add(None)
        self.work.set()
        if self.pruner is not None:
            self.pruner.request()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _detect_loop(self) -> None:
        next_full = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            names = {None} if now >= next_full else self.wakeups.take(
                RECHECK_INTERVAL if self.incomplete else min(self.config.scan_interval,
                                                             next_full - now))
            # A rescan somebody asked for (an overflow, the run's end) trusts no cached listing.
            asked = None in names and now < next_full
            admitted = self.pipeline.admissions
            try:
                if None in names or time.monotonic() >= next_full:
                    self._judge_all(fresh=asked)
                    next_full = time.monotonic() + self.config.scan_interval
                else:
                    self._judge({n for n in names if n} | self.incomplete)
            except Exception:  # the loop must outlive any one bad folder
                log.exception("detection pass failed; retrying at the next pass")
            if self.pruner is not None and self.pipeline.admissions != admitted:
                self.pruner.request()
            self.last_loop = time.time()

    def _judge_all(self, fresh: bool = False) -> None:
        detections = self.pipeline.scan(FINISHED_RECHECKS_PER_SCAN, fresh_listing=fresh)
        self.incomplete = {n for n, d in detections.items() if d.verdict is Verdict.NOT_YET}
        self.full_scans += 1
        if self.full_scans == 1:
            log.info("first scan done", extra={"folders": len(detections),
                                               "incomplete": len(self.incomplete)})
        self.work.set()

    def _judge(self, names: set[str]) -> None:
        for name in sorted(names):
            ref = classify(name)
            if ref is None:
                continue
            detection = self.pipeline.observe(ref)
            if detection.verdict is Verdict.NOT_YET:
                self.incomplete.add(name)
            else:
                self.incomplete.discard(name)
        self.work.set()

    def _upload_loop(self) -> None:
        while not self.stop.is_set():
            self.work.wait(RECHECK_INTERVAL)
            self.work.clear()
            with self._busy_lock:
                self._busy += 1
            try:
                while not self.stop.is_set():
                    record = self.pipeline.claim()
                    if record is None:
                        break
                    try:
                        self.pipeline.upload(record)
                    finally:
                        self.pipeline.release(record)
                        self.work.set()  # the final adapter may be due now
            except Exception:
                log.exception("upload pass failed; retrying at the next pass")
            finally:
                with self._busy_lock:
                    self._busy -= 1
            self.last_loop = time.time()

    def _prune_loop(self) -> None:
        assert self.pruner is not None
        while not self.stop.is_set():
            requested = self.pruner.due.wait(SPACE_CHECK_INTERVAL)
            self.pruner.due.clear()
            if self.stop.is_set():
                break
            try:
                if requested:
                    self.pruner.run_pass()
                    self.work.set()  # a damaged remote copy may have been reopened
                else:
                    self.pruner.check_space()
            except Exception:
                log.exception("prune pass failed; retrying after the next completion")
