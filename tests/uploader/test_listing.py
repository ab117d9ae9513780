"""The watcher's rescans list the output dir again only when it changed (issue 15: idle CPU
over 10,000 checkpoints), and never trust a listing taken too close to the dir's mtime, one
too old, one asked to be fresh, or a filesystem whose directory mtime may not move."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shared.layout import list_folders
from uploader import listing as listing_module
from uploader.listing import COARSE_MTIME_S, FolderListing


def settled(out: Path) -> None:
    """The dir's last change well in the past, as after a quiet spell."""
    old = time.time() - 10 * COARSE_MTIME_S
    os.utime(out, (old, old))


def test_an_unchanged_dir_is_not_listed_again_and_any_change_is_seen(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    settled(out)
    listing = FolderListing(out, trust_mtime=True)
    first = listing.refs()
    assert [r.name for r in first] == ["checkpoint-10"] and listing.listings == 1
    assert listing.refs() is first and listing.listings == 1
    (out / "checkpoint-20").mkdir()  # a new entry updates the dir's mtime
    assert [r.name for r in listing.refs()] == ["checkpoint-10", "checkpoint-20"]
    settled(out)
    (out / "checkpoint-10").rename(out / "checkpoint-30")
    assert tuple(listing.refs()) == tuple(list_folders(out))
    assert [r.name for r in listing.refs()] == ["checkpoint-20", "checkpoint-30"]


def test_a_listing_within_the_coarse_window_of_the_mtime_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)  # the dir's mtime: now
    listing = FolderListing(out, trust_mtime=True)
    listing.refs()
    listing.refs()
    assert listing.listings == 2, "a later change could still carry the same mtime"
    settled(out)
    listing.refs()
    listing.refs()
    assert listing.listings == 3


def test_fresh_too_old_or_an_untrusted_filesystem_always_lists(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    settled(out)
    listing = FolderListing(out, trust_mtime=True)
    listing.refs()
    listing.refs(fresh=True)  # an inotify overflow, the run's end
    assert listing.listings == 2
    aged = FolderListing(out, trust_mtime=True, max_age=0.0)
    aged.refs()
    aged.refs()
    assert aged.listings == 2
    untrusted = FolderListing(out, trust_mtime=False)
    untrusted.refs()
    untrusted.refs()
    assert untrusted.listings == 2


@pytest.mark.parametrize(("fstype", "trusted"), [("ext4", True), ("overlay", True),
                                                 ("tmpfs", True), ("fuse.s3fs", False),
                                                 ("nfs4", False), ("virtiofs", False),
                                                 (None, False)])
def test_the_mtime_is_trusted_only_on_a_known_local_filesystem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str | None,
        trusted: bool) -> None:
    monkeypatch.setattr(listing_module, "filesystem_type", lambda path: fstype)
    assert FolderListing(tmp_path).trust_mtime is trusted


def test_a_missing_output_dir_lists_nothing(tmp_path: Path) -> None:
    listing = FolderListing(tmp_path / "absent", trust_mtime=True)
    assert listing.refs() == ()
    (tmp_path / "absent" / "checkpoint-10").mkdir(parents=True)
    assert [r.name for r in listing.refs()] == ["checkpoint-10"]
