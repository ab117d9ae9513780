"""Progress of the checkpoints in flight: one line each on a terminal, counted from the transfer.

    HubClient.commit  -> commit_progress(repo_id, files)   one entry per checkpoint (its repo id)
    hfcompat.count_transfer                                the library's own per-file byte counts
                                                           (LFS stream reads, hf_xet's reports)
    ProgressLine (CLI)                                     redraws every entry in place, <= 4/s
    ConsoleEvents.verified / failed -> ProgressLine.finish the line goes, the verified block prints

The tracker is off unless the CLI turned it on (`watch`/`backfill` with `--log-format text` and
stderr on a terminal, see `uploader.cli.console.start_progress`): then `commit_progress` counts,
otherwise it does nothing. Bytes are what huggingface_hub reports for each file; when the commit
lands, the files it reported nothing for (small files sent inline in the commit request, or
already on the server) count as sent, so a landed entry reads its full size. A retried commit
carries on from what the earlier attempts sent (each file's bytes count once). Nothing here
imports the CLI; the pipeline does not know this module exists.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from shared.naming import RepoNameError, parse_repo_id
from uploader.hfcompat import count_transfer
from uploader.units import human_bytes

# At most this many redraws per second.
REDRAW_INTERVAL = 0.25
FALLBACK_WIDTH = 80
# Clear the current line: carriage return, then erase to its end; and move one line up.
CLEAR_LINE = "\r\x1b[K"
LINE_UP = "\x1b[1A"


def human_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def label_of(repo_id: str) -> str:
    """"step 450" or "final" from the repo id; the repo name for anything else."""
    try:
        name = parse_repo_id(repo_id)
    except (RepoNameError, ValueError):
        return repo_id.rsplit("/", 1)[-1]
    return "final" if name.step is None else f"step {name.step}"


@dataclass(frozen=True)
class Snapshot:
    """One entry as drawn: `rate` in bytes/s (None before the first byte), `eta` in seconds;
    `reported` the bytes the library itself reported (`done` adds the rest once landed)."""

    key: str
    label: str
    total: int
    done: int
    landed: bool
    rate: float | None
    eta: float | None
    reported: int = 0

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass
class _Entry:
    label: str
    total: int
    sizes: dict[str, int]  # local path -> size, for the files the library may report
    started: float
    reported: dict[str, int] = field(default_factory=dict)  # local path -> bytes so far
    first_byte: tuple[float, int] | None = None  # when the first report came, and its bytes
    landed: bool = False

    @property
    def done(self) -> int:
        if self.landed:
            return self.total
        return min(self.total, sum(self.reported.values()))


class ProgressTracker:
    """Thread-safe: per key (a checkpoint's repo id), total bytes, bytes done, start time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.enabled = False
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._changed = threading.Event()

    def begin(self, key: str, label: str, total: int, sizes: dict[str, int] | None = None
              ) -> None:
        """An attempt at uploading `key` starts. A retry keeps what earlier attempts sent: the
        library skips files already on the server, and a file it sends again counts from where
        it got to before (its reports are counted once, past that point)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(label, total, dict(sizes or {}), self.clock())
            else:
                entry.label, entry.total, entry.landed = label, total, False
                entry.sizes.update(sizes or {})
        self._changed.set()

    def file_bytes(self, key: str, path: str, done: int) -> None:
        """The library says `done` bytes of the file at `path` are transferred (absolute)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            size = entry.sizes.get(path)
            done = max(0, done if size is None else min(done, size))
            before = entry.reported.get(path, 0)
            if done <= before:
                return
            entry.reported[path] = done
            if entry.first_byte is None:
                # The rate counts from the first report on: what it reports was sent before.
                entry.first_byte = (self.clock(), sum(entry.reported.values()))
        self._changed.set()

    def landed(self, key: str) -> None:
        """The commit is on the server: every byte of the entry is there."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.landed = True
        self._changed.set()

    def finish(self, key: str) -> bool:
        """The entry is done (verified, or failed): forget it. True when there was one."""
        with self._lock:
            found = self._entries.pop(key, None) is not None
        self._changed.set()
        return found

    def snapshot(self, key: str) -> Snapshot | None:
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else self._snap(key, entry, self.clock())

    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            now = self.clock()
            return [self._snap(k, e, now) for k, e in self._entries.items()]

    def wait_changed(self, timeout: float) -> bool:
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    @staticmethod
    def _snap(key: str, entry: _Entry, now: float) -> Snapshot:
        done, reported = entry.done, sum(entry.reported.values())
        rate: float | None = None
        eta: float | None = None
        if entry.first_byte is not None:
            since, base = entry.first_byte
            # Averaged from the first report on: the set-up before it (repo, preupload, the
            # Xet token) is not transfer time.
            elapsed, sent = now - since, reported - base
            if elapsed > 0 and sent > 0:
                rate = sent / elapsed
                eta = max(0, entry.total - done) / rate
        if entry.landed:
            eta = 0.0
        return Snapshot(key, entry.label, entry.total, done, entry.landed, rate, eta, reported)

    # -- bytes sent before the commit ------------------------------------------------------
    @contextmanager
    def sending(self, key: str, sizes: Mapping[str, int], total: int) -> Iterator[None]:
        """Counts one preupload (files sent ahead of their commit) under `key`; `total` is the
        whole upload's, so the line's fraction and ETA are right from the first file on."""
        sizes = {os.path.abspath(path): size for path, size in sizes.items()}
        self.begin(key, label_of(key), total, sizes)

        def reporter(path: str) -> Callable[[int], None]:
            return lambda done: self.file_bytes(key, path, done)

        with count_transfer({path: reporter(path) for path in sizes}):
            yield

    # -- one commit ------------------------------------------------------------------------
    @contextmanager
    def commit(self, key: str, files: Sequence[_File]) -> Iterator[None]:
        """Counts one commit attempt of `files` under `key`; landed when the block ends."""
        sizes = {os.path.abspath(f.local_path): f.digest.size for f in files
                 if f.local_path is not None}
        self.begin(key, label_of(key), sum(f.digest.size for f in files), sizes)

        def reporter(path: str) -> Callable[[int], None]:
            return lambda done: self.file_bytes(key, path, done)

        with count_transfer({path: reporter(path) for path in sizes}):
            yield
        self.landed(key)


class _Digest(Protocol):
    size: int


class _File(Protocol):
    """What `commit_progress` reads of a `uploader.hub.LocalFile`."""

    @property
    def local_path(self) -> Path | None: ...

    @property
    def digest(self) -> _Digest: ...


TRACKER = ProgressTracker()
HF_HUB_DISABLE_PROGRESS_BARS = "HF_HUB_DISABLE_PROGRESS_BARS"


def progress_wanted(fmt: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """The line is shown with text logs on a terminal only. `HF_HUB_DISABLE_PROGRESS_BARS` set
    means the user chose the library's behaviour: 1, no progress at all; 0, its own bars."""
    if fmt != "text" or environ.get(HF_HUB_DISABLE_PROGRESS_BARS) is not None:
        return False
    if environ.get("TERM") == "dumb":  # no cursor movement there
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def send_progress(key: str, sizes: Mapping[str, int], total: int
                  ) -> AbstractContextManager[None]:
    """`with send_progress(repo_id, {local path: size}, total): preupload(...)`: counted when the
    CLI shows progress, nothing otherwise."""
    return TRACKER.sending(key, sizes, total) if TRACKER.enabled else nullcontext()


def commit_progress(key: str, files: Sequence[_File]) -> AbstractContextManager[None]:
    """`with commit_progress(repo_id, files): create_commit(...)`: counted when the CLI shows
    progress, nothing otherwise."""
    return TRACKER.commit(key, files) if TRACKER.enabled else nullcontext()


def format_line(snap: Snapshot) -> str:
    """`step 450  12.3 MB / 40.0 MB  31%  5.2 MB/s  ETA 0:05` (`verifying` once landed)."""
    head = (f"{snap.label}  {human_bytes(snap.done)} / {human_bytes(snap.total)}  "
            f"{snap.fraction * 100:3.0f}%")
    if snap.landed:
        return f"{head}  verifying"
    if snap.rate is None:
        return f"{head}  starting"
    eta = "--:--" if snap.eta is None else human_duration(snap.eta)
    return f"{head}  {human_bytes(snap.rate)}/s  ETA {eta}"


class ProgressLine:
    """Draws the tracker's entries on a terminal stream, one line each, redrawn in place.

    Everything else written to that terminal (log records, the verified block) goes through
    `paused()` or a stream from `guard()`: the lines are cleared first and drawn again after,
    so a log line never lands in the middle of a progress line.
    """

    def __init__(self, tracker: ProgressTracker, stream: TextIO,
                 interval: float = REDRAW_INTERVAL) -> None:
        self.tracker = tracker
        self.stream = stream
        self.interval = interval
        self._lock = threading.RLock()
        self._drawn = 0  # lines on screen now
        self._shown: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> ProgressLine:
        self._thread = threading.Thread(target=self._run, name="progress-line", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval + 1)
        with self._lock:
            self._clear()
            self._flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.render()
            # A change redraws soon, but never more often than `interval`.
            self._stop.wait(self.interval)
            self.tracker.wait_changed(max(0.0, 1.0 - self.interval))

    # -- drawing ---------------------------------------------------------------------------
    def lines(self) -> list[str]:
        width = self._width()
        return [format_line(s)[:width - 1] for s in self.tracker.snapshots()]

    def render(self) -> None:
        """One frame: the current entries, in place of the previous frame (if it changed)."""
        with self._lock:
            lines = self.lines()
            if lines == self._shown and self._drawn == len(lines):
                return
            self._write(self._clear_sequence() + "\n".join(lines))
            self._drawn, self._shown = len(lines), lines
            self._flush()

    def finish(self, key: str) -> None:
        """`key` is verified (or failed): its line goes now, before anything else prints."""
        with self._lock:
            if self.tracker.finish(key):
                self._clear()
                self.render()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Clears the lines; what the block writes comes where they were; drawn again after."""
        with self._lock:
            self._clear()
            self._flush()
            yield

    def guard(self, stream: TextIO) -> TextIO:
        """`stream` (the log handler's), writing through `paused()` and redrawing after."""
        return _GuardedStream(stream, self)  # type: ignore[return-value]

    def _clear_sequence(self) -> str:
        if self._drawn == 0:
            return ""
        return CLEAR_LINE + (LINE_UP + CLEAR_LINE) * (self._drawn - 1)

    def _clear(self) -> None:
        if self._drawn:
            self._write(self._clear_sequence())
            self._drawn, self._shown = 0, []

    def _write(self, text: str) -> None:
        with suppress(OSError, ValueError):  # a closed terminal must not break an upload
            self.stream.write(text)

    def _flush(self) -> None:
        with suppress(OSError, ValueError):
            self.stream.flush()

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or FALLBACK_WIDTH
        except (OSError, ValueError, AttributeError):
            return FALLBACK_WIDTH


class _GuardedStream:
    def __init__(self, stream: TextIO, line: ProgressLine) -> None:
        self._stream = stream
        self._line = line

    def write(self, text: str) -> int:
        with self._line.paused():
            written = self._stream.write(text)
            if text.endswith("\n"):
                self._stream.flush()
                self._line.render()
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
