"""Completion detection: is a checkpoint folder finished, and which version of it is this?

Trainer writes checkpoints in place and not atomically, so a folder is judged by two roads:

1. marker - the trainer's completion marker (`shared.markers`) lists every file of the folder;
   when the folder still holds exactly those files the folder is complete, at once.
2. settle - for trainers that write no marker: the expected files are present, no temporary file
   is left, nothing changed for a settle window (measured as the age of the newest mtime, so a
   restarted uploader does not wait a whole window again), a second stat snapshot agrees with the
   first, and every JSON and safetensors header parses (the rules of a finished save are
   `shared.completion`'s, which the trainer applies too when it resumes from an unmarked folder).

Only stat calls are made while a folder is unchanged since its last COMPLETE verdict, so watching
a thousand finished checkpoints stays cheap; files are read only for a new or changed snapshot.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.completion import (  # the rules themselves; re-exported for old importers
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DEEPSPEED_DIR_PREFIX,
    EVAL_RESULTS,
    FSDP_MODEL_DIR,
    FULL_WEIGHTS,
    MAX_SAFETENSORS_HEADER,
    SAFETENSORS_LENGTH_BYTES,
    Unfinished,
    check_safetensors_header,
    is_temporary,
    read_documents,
    require_files,
    require_no_temporary,
    step_of,
    walk_folder,
)
from shared.layout import FolderRef
from shared.markers import FileStat, Marker, MarkerError, read_marker
from shared.naming import folder_timestamp

logger = logging.getLogger(__name__)

# A settled folder that still misses files or fails validation after this long was most likely
# abandoned by a crashed save; it is reported INVALID (with the reason) instead of NOT_YET.
ABANDONED_AFTER_SECONDS = 3600.0

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "DEEPSPEED_DIR_PREFIX", "EVAL_RESULTS", "FSDP_MODEL_DIR",
    "FULL_WEIGHTS", "MAX_SAFETENSORS_HEADER", "SAFETENSORS_LENGTH_BYTES", "CompletionDetector",
    "Detection", "FolderVersion", "Verdict", "check_safetensors_header", "is_temporary",
    "scan_folder", "version_key",
]


class Verdict(enum.StrEnum):
    COMPLETE = "complete"
    NOT_YET = "not_yet"
    GONE = "gone"
    INVALID = "invalid"


@dataclass(frozen=True)
class FolderVersion:
    """One immutable version of a folder's content, as detected complete."""

    ref: FolderRef
    step: int
    files: tuple[FileStat, ...]
    inodes: tuple[tuple[str, int], ...]
    version_key: str
    timestamp: datetime
    run_id: str | None
    marker: Marker | None
    origin_repo: str | None
    detected_by: str  # "marker" or "settle"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Detection:
    verdict: Verdict
    version: FolderVersion | None
    reason: str


@dataclass(frozen=True)
class _Scan:
    """One stat pass over a folder (lstat: symlinks are recorded, never followed)."""

    files: tuple[FileStat, ...]  # the same tuple `shared.markers.snapshot_files` returns
    inodes: tuple[tuple[str, int], ...]
    regular: frozenset[str]  # paths that are regular files (the only ones ever read)
    newest_mtime_ns: int  # of every file and directory, the folder itself included

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.path for f in self.files)


class _Verdict(Exception):
    """Raised inside a check to end it with a verdict other than COMPLETE."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


def scan_folder(folder: Path) -> _Scan:
    """Stat every entry under `folder`; FileNotFoundError when it vanishes meanwhile."""
    newest = 0
    files: list[FileStat] = []
    inodes: list[tuple[str, int]] = []
    regular: set[str] = set()
    for rel, st in walk_folder(folder):
        if st.st_mtime_ns > newest:
            newest = st.st_mtime_ns
        if rel in ("", "/"):  # the folder itself, or a directory inside it
            continue
        files.append(FileStat(rel, st.st_size, st.st_mtime_ns))
        inodes.append((rel, st.st_ino))
        if stat.S_ISREG(st.st_mode):
            regular.add(rel)
    return _Scan(tuple(sorted(files)), tuple(sorted(inodes)), frozenset(regular), newest)


def version_key(folder: str, step: int, files: tuple[FileStat, ...],
                inodes: tuple[tuple[str, int], ...]) -> str:
    """A stable id of one folder version: same name, step and file stats give the same key."""
    inode_of = dict(inodes)
    rows = [[f.path, f.size, f.mtime_ns, inode_of.get(f.path, 0)] for f in files]
    payload = json.dumps([folder, step, rows], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class CompletionDetector:
    """Judges folders of one output dir; keeps a per-folder cache of COMPLETE verdicts."""

    def __init__(self, output_dir: Path, settle_seconds: float, *,
                 clock: Callable[[], float] = time.time,
                 abandoned_after: float = ABANDONED_AFTER_SECONDS,
                 markers_expected: Callable[[], bool] = lambda: False) -> None:
        self.output_dir = Path(output_dir)
        # While a trainer that writes markers is running, only its marker says "complete": the
        # settle rules would also pass a folder the trainer has paused in (the final adapter
        # while the F1 evaluation runs). Once the run ended, they judge what has no marker.
        self.markers_expected = markers_expected
        self.settle_seconds = settle_seconds
        self.abandoned_after = max(abandoned_after, settle_seconds)
        self._clock = clock
        self._complete: dict[str, tuple[_Scan, Detection]] = {}
        self._last_reason: dict[str, str] = {}
        # Folders not complete yet: (newest file mtime, when we looked), for `writing_now`.
        self._writes: dict[str, tuple[float, float]] = {}
        self._writes_lock = threading.Lock()  # read by upload threads, written by detection

    def check(self, ref: FolderRef) -> Detection:
        folder = ref.path(self.output_dir)
        try:
            scan = scan_folder(folder)
        except PermissionError as exc:
            detection = Detection(Verdict.INVALID, None, f"cannot list the folder: {exc}")
        except (FileNotFoundError, NotADirectoryError):
            if not os.path.lexists(folder):
                self._forget(ref.name)
                return Detection(Verdict.GONE, None, "folder no longer exists")
            detection = self._not_directory(folder)
        else:
            cached = self._complete.get(ref.name)
            if cached is not None and _same(cached[0], scan):
                return cached[1]
            self._complete.pop(ref.name, None)
            detection = self._judge(ref, folder, scan)
            if detection.verdict is Verdict.COMPLETE:
                self._complete[ref.name] = (scan, detection)
            with self._writes_lock:
                if detection.verdict is Verdict.NOT_YET:
                    self._writes[ref.name] = (scan.newest_mtime_ns / 1e9, self._clock())
                else:
                    self._writes.pop(ref.name, None)
        self._note(ref, detection)
        return detection

    def unchanged(self, ref: FolderRef, step: int, recorded_key: str) -> bool:
        """Whether the folder still holds exactly the version recorded as `recorded_key`: one
        stat pass, nothing read or parsed. A rescan re-judges finished folders in turn only to
        see a rewrite, and a rewrite changes a size, an mtime or an inode (as for `check`'s
        own cache); a folder that is gone or changed gets a full `check`."""
        try:
            scan = scan_folder(ref.path(self.output_dir))
        except OSError:
            return False
        return version_key(ref.name, step, scan.files, scan.inodes) == recorded_key

    def writing_now(self, quiet: float = 2.0) -> bool:
        """Whether the trainer is writing a checkpoint right now: a folder not complete yet
        whose newest file changed within `quiet` seconds of when we last looked, and we looked
        within `quiet` seconds (the watch loop re-judges such folders every second; an old
        observation says nothing)."""
        now = self._clock()
        with self._writes_lock:
            looks = list(self._writes.values())
        return any(now - seen <= quiet and seen - mtime <= quiet for mtime, seen in looks)

    def _forget(self, name: str) -> None:
        """Drop what is kept for a folder that is gone (rotation), so memory stays bounded."""
        self._complete.pop(name, None)
        with self._writes_lock:
            self._writes.pop(name, None)
        self._last_reason.pop(name, None)
        self._last_reason.pop(f"marker:{name}", None)

    def _not_directory(self, folder: Path) -> Detection:
        if folder.is_symlink() or not folder.is_dir():
            return Detection(Verdict.INVALID, None, f"{folder.name} is not a real directory")
        return Detection(Verdict.NOT_YET, None, "files changed while the folder was listed")

    def _judge(self, ref: FolderRef, folder: Path, scan: _Scan) -> Detection:
        if folder.is_symlink():
            return Detection(Verdict.INVALID, None, f"{folder.name} is a symlink")
        try:
            marker = self._trusted_marker(ref, scan)
            if marker is not None:
                version = self._version(ref, folder, scan, marker.step, marker)
                return Detection(Verdict.COMPLETE, version, "completion marker matches")
            if self.markers_expected():
                raise self._awaiting_marker(scan)
            step = self._settled_step(ref, folder, scan)
            if not _same(scan_folder(folder), scan):
                raise _Verdict(Verdict.NOT_YET, "folder changed while it was checked")
            version = self._version(ref, folder, scan, step, None)
        except _Verdict as outcome:
            return Detection(outcome.verdict, None, outcome.reason)
        except FileNotFoundError as exc:
            return Detection(Verdict.NOT_YET, None, f"a file vanished while checked: {exc}")
        return Detection(Verdict.COMPLETE, version, f"settled for {self.settle_seconds:g}s")

    def _trusted_marker(self, ref: FolderRef, scan: _Scan) -> Marker | None:
        """The folder's marker when it describes the folder exactly; None (logged why) otherwise."""
        try:
            marker = read_marker(self.output_dir, ref.name)
        except MarkerError as exc:
            self._note_marker(ref, f"marker not trusted: {exc}", logging.WARNING)
            return None
        if marker is None:
            return None
        if marker.kind is not ref.kind or (ref.step is not None and marker.step != ref.step):
            reason = f"marker not trusted: it describes {marker.kind} step {marker.step}"
            self._note_marker(ref, reason, logging.WARNING)
            return None
        if marker.files != scan.files:
            self._note_marker(ref, "marker is stale: the folder changed after it was written",
                              logging.INFO)
            return None
        return marker

    def _awaiting_marker(self, scan: _Scan) -> _Verdict:
        """NOT_YET while the trainer may still finish this save; past `abandoned_after` without
        a change, a save the trainer died in (the run never ended): INVALID, so it no longer
        holds up pruning and is named once in the log instead."""
        age = self._clock() - scan.newest_mtime_ns / 1e9
        if age >= self.abandoned_after:
            return _Verdict(Verdict.INVALID, f"no completion marker and nothing changed for "
                                             f"{age:.0f}s: an abandoned save, ignored")
        return _Verdict(Verdict.NOT_YET, "waiting for the trainer's completion marker")

    def _settled_step(self, ref: FolderRef, folder: Path, scan: _Scan) -> int:
        """The step of a settled, valid folder; raises _Verdict when it is not (yet) one."""
        age = self._clock() - scan.newest_mtime_ns / 1e9
        if age < self.settle_seconds:
            raise _Verdict(
                Verdict.NOT_YET,
                f"settling: last change {max(age, 0.0):.1f}s ago, window {self.settle_seconds:g}s",
            )
        try:
            require_no_temporary(scan.names)
            require_files(ref, scan.names)
            docs = _validate(folder, scan)
        except Unfinished as outcome:
            if not outcome.final and age >= self.abandoned_after:
                raise _Verdict(
                    Verdict.INVALID,
                    f"{outcome.reason}, and nothing changed for {age:.0f}s: an interrupted save?",
                ) from None
            raise _verdict_of(outcome) from None
        try:
            return step_of(ref, docs)
        except Unfinished as outcome:
            raise _verdict_of(outcome) from None

    def _version(self, ref: FolderRef, folder: Path, scan: _Scan, step: int,
                 marker: Marker | None) -> FolderVersion:
        return FolderVersion(
            ref=ref, step=step, files=scan.files, inodes=scan.inodes,
            version_key=version_key(ref.name, step, scan.files, scan.inodes),
            timestamp=folder_timestamp(folder, marker),
            run_id=marker.run_id if marker else None, marker=marker,
            origin_repo=marker.origin_repo if marker else None,
            detected_by="marker" if marker else "settle",
        )

    def _note_marker(self, ref: FolderRef, reason: str, level: int) -> None:
        key = f"marker:{ref.name}"
        if self._last_reason.get(key) != reason:
            self._last_reason[key] = reason
            logger.log(level, "%s: %s", ref.name, reason,
                       extra={"folder": ref.name, "reason": reason})

    def _note(self, ref: FolderRef, detection: Detection) -> None:
        """Log each change of verdict once, not once per poll."""
        if self._last_reason.get(ref.name) == detection.reason:
            return
        self._last_reason[ref.name] = detection.reason
        level = logging.WARNING if detection.verdict is Verdict.INVALID else logging.DEBUG
        logger.log(level, "%s: %s (%s)", ref.name, detection.verdict, detection.reason,
                   extra={"folder": ref.name, "verdict": str(detection.verdict),
                          "reason": detection.reason})


def _same(a: _Scan, b: _Scan) -> bool:
    return (a.files, a.inodes, a.newest_mtime_ns) == (b.files, b.inodes, b.newest_mtime_ns)


def _verdict_of(outcome: Unfinished) -> _Verdict:
    return _Verdict(Verdict.INVALID if outcome.final else Verdict.NOT_YET, outcome.reason)


def _validate(folder: Path, scan: _Scan) -> dict[str, Any]:
    """Parse every JSON and safetensors header (`shared.completion`); Unfinished when one fails."""
    return read_documents(folder, scan.names, scan.regular)
