"""The watcher's rescans list the output dir again only when it changed (issue 15: idle CPU
over 10,000 checkpoints), and never trust a listing taken too close to the dir's mtime."""

from __future__ import annotations

import os
from pathlib import Path

from shared.layout import list_folders
from uploader.listing import COARSE_MTIME_S, FolderListing


def settle(out: Path, now: float) -> None:
    """Set the dir's mtime well before `now`, as after a quiet spell."""
    old = now - 10 * COARSE_MTIME_S
    os.utime(out, (old, old))


def test_an_unchanged_dir_is_not_listed_again_and_any_change_is_seen(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    now = 1_000_000.0
    settle(out, now)
    listing = FolderListing(out, clock=lambda: now)
    first = listing.refs()
    assert [r.name for r in first] == ["checkpoint-10"] and listing.listings == 1
    assert listing.refs() is first and listing.listings == 1
    (out / "checkpoint-20").mkdir()  # a new entry updates the dir's mtime
    now = os.stat(out).st_mtime + 10 * COARSE_MTIME_S
    assert [r.name for r in listing.refs()] == ["checkpoint-10", "checkpoint-20"]
    assert listing.listings == 2
    (out / "checkpoint-10").rename(out / "checkpoint-30")
    now = os.stat(out).st_mtime + 10 * COARSE_MTIME_S
    assert tuple(listing.refs()) == tuple(list_folders(out))
    assert [r.name for r in listing.refs()] == ["checkpoint-20", "checkpoint-30"]


def test_a_listing_taken_within_the_coarse_window_of_the_mtime_is_not_reused(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    mtime = os.stat(out).st_mtime
    now = mtime + COARSE_MTIME_S / 2  # a later change could still carry the same mtime
    listing = FolderListing(out, clock=lambda: now)
    listing.refs()
    listing.refs()
    assert listing.listings == 2
    now = mtime + 2 * COARSE_MTIME_S
    listing.refs()
    listing.refs()
    assert listing.listings == 3


def test_a_missing_output_dir_lists_nothing(tmp_path: Path) -> None:
    listing = FolderListing(tmp_path / "absent")
    assert listing.refs() == ()
    (tmp_path / "absent" / "checkpoint-10").mkdir(parents=True)
    assert [r.name for r in listing.refs()] == ["checkpoint-10"]
