"""The output dir's folder list for the watcher's rescans, read again only when it changed.

A rescan every `--scan-interval` is the safety net under inotify; over 10,000 checkpoints
listing and classifying the directory is a third of its cost, and the answer only changes
when an entry is created, removed or renamed, which updates the directory's mtime. That is
trusted only where it is solid: on a local filesystem of a known type (FUSE, network and
virtual-machine shares may not update it, or stamp it with another machine's clock), for a
listing taken `COARSE_MTIME_S` or more after that mtime (coarse timestamps may give a later
change the same one), and for at most `MAX_AGE_S`. A rescan asked for (an inotify overflow,
the run's end) always lists afresh.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.layout import FolderRef, list_folders
from uploader.fsinfo import filesystem_type

COARSE_MTIME_S = 2.0
MAX_AGE_S = 600.0
# Filesystems whose directory mtime changes with every entry created, removed or renamed.
MTIME_TRUSTED_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs",
                              "overlay"})


class FolderListing:
    """`refs()`: `list_folders(output_dir)`, from the last listing while the dir is unchanged."""

    def __init__(self, output_dir: Path, *, trust_mtime: bool | None = None,
                 max_age: float = MAX_AGE_S) -> None:
        """`trust_mtime`: None decides from the output dir's filesystem type."""
        self.output_dir = output_dir
        self.max_age = max_age
        if trust_mtime is None:
            trust_mtime = filesystem_type(output_dir) in MTIME_TRUSTED_FS
        self.trust_mtime = trust_mtime
        self._stamp: tuple[int, int, int] | None = None
        self._listed_at = 0.0  # monotonic
        self._refs: tuple[FolderRef, ...] = ()
        self.listings = 0  # directory reads so far (for tests)

    def refs(self, fresh: bool = False) -> tuple[FolderRef, ...]:
        """The folders; `fresh` lists them again whatever the directory's mtime says."""
        try:
            st = os.stat(self.output_dir)
        except FileNotFoundError:
            self._stamp = None
            return ()
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if (not fresh and stamp == self._stamp
                and time.monotonic() - self._listed_at < self.max_age):
            return self._refs
        # The filesystem's clock is the wall clock: compare the mtime with time.time.
        listed_at = time.time()
        self._refs = tuple(list_folders(self.output_dir))
        self._listed_at = time.monotonic()
        self.listings += 1
        settled = listed_at - st.st_mtime_ns / 1e9 >= COARSE_MTIME_S
        self._stamp = stamp if settled and self.trust_mtime else None
        return self._refs


__all__ = ["COARSE_MTIME_S", "MAX_AGE_S", "MTIME_TRUSTED_FS", "FolderListing"]
