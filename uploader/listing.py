"""The output dir's folder list for the watcher's rescans, read again only when it changed.

A rescan every `--scan-interval` is the safety net under inotify; over 10,000 checkpoints
listing and classifying the directory is a third of its cost, and the answer only changes
when an entry is created, removed or renamed, which updates the directory's mtime. A listing
taken within `COARSE_MTIME_S` of that mtime is never reused: a filesystem with coarse
timestamps (1-2 s) may give a later change the same mtime.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from shared.layout import FolderRef, list_folders

COARSE_MTIME_S = 2.0


class FolderListing:
    """`refs()`: `list_folders(output_dir)`, from the last listing while the dir is unchanged."""

    def __init__(self, output_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.output_dir = output_dir
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._refs: tuple[FolderRef, ...] = ()
        self.listings = 0  # directory reads so far (for tests)

    def refs(self) -> tuple[FolderRef, ...]:
        try:
            st = os.stat(self.output_dir)
        except FileNotFoundError:
            self._stamp = None
            return ()
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if stamp == self._stamp:
            return self._refs
        listed_at = self._clock()
        self._refs = tuple(list_folders(self.output_dir))
        self.listings += 1
        settled = listed_at - st.st_mtime_ns / 1e9 >= COARSE_MTIME_S
        self._stamp = stamp if settled else None
        return self._refs


__all__ = ["COARSE_MTIME_S", "FolderListing"]
