"""Staging: a snapshot of a complete folder taken at detection, so rotation can delete nothing.

Rotation (`save_total_limit`) may delete a checkpoint folder while it waits or uploads. At
detection its files are hard-linked (copied across devices) into `<staging_root>/<key>/`, which
sits under `.uploader/` where rotation's `checkpoint-*` glob never looks.

Crash safety: the snapshot is built under `<key>.partial/`, fsynced and renamed to `<key>/`; the
metadata file `<key>.json` (file list with stats, skipped files) is written atomically after the
rename and is the commit point. `reconcile()` at start deletes partial builds, snapshots without
metadata, and snapshots whose key the state no longer knows. The content folder holds only the
checkpoint's files, so it can be uploaded as it is.

Hard links share inodes with the original: a trainer rewriting a file in place changes the staged
bytes too. `unchanged()` re-stats before an upload; hashes taken during upload catch the rest.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.fsutil import atomic_write_json, fsync_dir
from shared.markers import FileStat
from uploader.detect import FolderVersion
from uploader.errors import StagingError

logger = logging.getLogger(__name__)

DEFAULT_DENYLIST: tuple[str, ...] = (".env", "*.pem", "*.key", "id_rsa*", ".netrc", ".git-credentials")
PARTIAL_SUFFIX = ".partial"
# huggingface_hub keeps its own metadata here (local_dir downloads); the Hub refuses it.
HUB_CACHE_PREFIX = ".cache/huggingface/"
META_SUFFIX = ".json"
META_SCHEMA = 1
# Keep this much free after a copy: filling the disk would stall the trainer's next save.
FREE_SPACE_MARGIN_BYTES = 256 * 1024 * 1024
COPY_CHUNK_BYTES = 8 * 1024 * 1024
# Errors from link() that a copy can get around (other device, hard links refused or exhausted).
_LINK_FALLBACK_ERRNOS = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                   errno.EOPNOTSUPP})
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class StagedFolder:
    key: str  # the version_key
    path: Path  # staging_root / key: the checkpoint's files and nothing else
    files: tuple[FileStat, ...]  # relative paths; stats of the staged files
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class _Plan:
    """What one stage() call has staged and skipped so far, and whether it fell back to copies."""

    def __init__(self) -> None:
        self.staged: list[FileStat] = []
        self.skipped: list[tuple[str, str]] = []
        self.copying = False  # set after the first link() that must fall back to a copy


class Stager:
    def __init__(self, staging_root: Path, denylist: Sequence[str] = DEFAULT_DENYLIST,
                 max_held_bytes: int = 0) -> None:
        self.root = Path(staging_root)
        self.denylist = tuple(denylist)
        # --max-staged-bytes: during a long outage every rotated checkpoint stays on disk
        # through its staged links, so `save_total_limit` no longer bounds disk use. 0: no cap.
        self.max_held_bytes = max_held_bytes

    # -- paths --------------------------------------------------------------------------------

    def _content(self, key: str) -> Path:
        return self.root / _checked_key(key)

    def _meta(self, key: str) -> Path:
        return self.root / f"{_checked_key(key)}{META_SUFFIX}"

    # -- public -------------------------------------------------------------------------------

    def stage(self, source: Path, version: FolderVersion) -> StagedFolder:
        """Snapshot `source` (the folder of `version`); StagingError when that is impossible."""
        key = version.version_key
        existing = self.get(key)
        if existing is not None:
            return existing
        self._check_room(version)
        final, partial = self._content(key), self.root / f"{_checked_key(key)}{PARTIAL_SUFFIX}"
        try:
            staged, plan = self._build(Path(source), version, partial, final)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise StagingError(
                f"cannot stage {version.ref.name} into {self.root}: {exc}",
                hint="check that the staging dir is writable, has free space, and that the "
                     "uploader runs with the trainer's UID",
            ) from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        logger.info(
            "staged %s: %d files, %d bytes", version.ref.name, len(staged.files),
            staged.total_bytes,
            extra={"folder": version.ref.name, "version_key": key, "files": len(staged.files),
                   "skipped": len(staged.skipped), "copied": plan.copying},
        )
        return staged

    def held_bytes(self) -> int:
        """Bytes that only staging keeps on disk: staged files whose original the trainer has
        deleted (one link left), and copies."""
        held = 0
        if not self.root.is_dir():
            return held
        for content in self.root.iterdir():
            if not content.is_dir() or content.name.endswith(PARTIAL_SUFFIX):
                continue
            for dirpath, _dirs, names in os.walk(content):
                for name in names:
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    if st.st_nlink == 1:
                        held += st.st_size
        return held

    def _check_room(self, version: FolderVersion) -> None:
        if not self.max_held_bytes:
            return
        held = self.held_bytes()
        if held >= self.max_held_bytes:
            raise StagingError(
                f"staging already holds {held} bytes of checkpoints the trainer deleted "
                f"(--max-staged-bytes {self.max_held_bytes}): {version.ref.name} is not "
                "snapshotted yet, so rotation could still delete it",
                hint="it is snapshotted as soon as uploads free staging; raise "
                     "--max-staged-bytes or restore the Hub connection")

    def _build(self, source: Path, version: FolderVersion, partial: Path, final: Path
               ) -> tuple[StagedFolder, _Plan]:
        """Link into `partial`, publish it as `final`, then commit with the metadata file."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in (partial, final):  # from a crash, or content without its metadata
            shutil.rmtree(leftover, ignore_errors=True)
        partial.mkdir()
        plan = self._populate(source, partial, version)
        _fsync_tree(partial)
        os.rename(partial, final)
        fsync_dir(self.root)
        staged = StagedFolder(version.version_key, final, tuple(sorted(plan.staged)),
                              tuple(sorted(plan.skipped)))
        atomic_write_json(self._meta(staged.key), {
            "schema": META_SCHEMA,
            "key": staged.key,
            "folder": version.ref.name,
            "files": [[f.path, f.size, f.mtime_ns] for f in staged.files],
            "skipped": [list(s) for s in staged.skipped],
        })
        return staged, plan

    def get(self, key: str) -> StagedFolder | None:
        """The committed snapshot of `key` (also after a restart), None when there is none."""
        meta, content = self._meta(key), self._content(key)
        try:
            data = json.loads(meta.read_text())
            files = tuple(sorted(FileStat(_safe_rel(str(p)), int(s), int(m))
                                 for p, s, m in data["files"]))
            skipped = tuple(sorted((str(p), str(r)) for p, r in data["skipped"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("staging metadata %s is unreadable: %s", meta, exc,
                           extra={"version_key": key})
            return None
        if data.get("key") != key or not content.is_dir():
            return None
        return StagedFolder(key, content, files, skipped)

    def unchanged(self, staged: StagedFolder) -> bool:
        """True while every staged file still has the size and mtime it was staged with."""
        for f in staged.files:
            try:
                st = os.lstat(staged.path / f.path)
            except OSError:
                return False
            if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                return False
        return True

    def remove(self, key: str) -> None:
        # Metadata first: a crash in between leaves content without metadata, which
        # reconcile() removes; the other order could leave metadata pointing at nothing.
        self._meta(key).unlink(missing_ok=True)
        shutil.rmtree(self._content(key), ignore_errors=True)
        fsync_dir(self.root)

    def reconcile(self, live_keys: set[str]) -> list[str]:
        """At start: delete partial builds, uncommitted and unknown snapshots; return their names."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for entry in sorted(self.root.iterdir()):
            reason = self._stale_reason(entry, live_keys)
            if reason is None:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
            logger.info("removed %s from staging: %s", entry.name, reason,
                        extra={"staging_entry": entry.name, "reason": reason})
        if removed:
            fsync_dir(self.root)
        return removed

    # -- internals ------------------------------------------------------------------------------

    def _stale_reason(self, entry: Path, live_keys: set[str]) -> str | None:
        name = entry.name
        if name.endswith(PARTIAL_SUFFIX):
            return "partial build from an interrupted run"
        if name.endswith(".tmp"):
            return "temporary metadata file from an interrupted write"
        key = name[: -len(META_SUFFIX)] if name.endswith(META_SUFFIX) else name
        if not _KEY_RE.fullmatch(key):
            logger.warning("unexpected entry %s in the staging dir left alone", entry,
                           extra={"staging_entry": name})
            return None
        if key not in live_keys:
            return "no state record uses this version"
        if name.endswith(META_SUFFIX):
            return None if self._content(key).is_dir() else "metadata without content"
        return None if self._meta(key).is_file() else "content without metadata"

    def _populate(self, source: Path, dest: Path, version: FolderVersion) -> _Plan:
        plan = _Plan()
        real_source = Path(os.path.realpath(source))
        inode_of = dict(version.inodes)
        for expected in version.files:
            rel = _safe_rel(expected.path)
            path = source / rel
            reason = self._denied(rel)
            if reason is None:
                mode = _lstat_mode(path, version, rel)
                if stat.S_ISLNK(mode):
                    reason = self._stage_symlink(path, rel, real_source, dest, plan, version)
                elif not stat.S_ISREG(mode):
                    reason = "not a regular file (a pipe, socket or device)"
                else:
                    self._stage_file(path, rel, dest, expected, inode_of.get(rel), plan, version)
            if reason is not None:
                plan.skipped.append((rel, reason))
                logger.warning("not staging %s/%s: %s", version.ref.name, rel, reason,
                               extra={"folder": version.ref.name, "file": rel, "reason": reason})
        return plan

    def _denied(self, rel: str) -> str | None:
        parts = rel.split("/")
        if ".git" in parts[:-1] or rel == ".git" or rel.startswith(HUB_CACHE_PREFIX):
            # The Hub refuses these paths in a commit: uploading them would fail every round.
            return "the Hub refuses this path (.git/ and .cache/huggingface/ are reserved)"
        base = rel.rsplit("/", 1)[-1].lower()
        for pattern in self.denylist:
            if fnmatch.fnmatchcase(base, pattern.lower()):
                return f"denylisted (matches {pattern!r})"
        return None

    def _stage_symlink(self, path: Path, rel: str, real_source: Path, dest: Path, plan: _Plan,
                       version: FolderVersion) -> str | None:
        """Stage a symlink's target when it stays in the folder; return why not otherwise."""
        target = Path(os.path.realpath(path))
        if target != real_source and real_source not in target.parents:
            return f"symlink to {target}, outside the folder"
        if not target.is_file():
            return "symlink to something other than a file inside the folder"
        reason = self._denied(target.name)
        if reason is not None:
            return f"symlink to a file that is {reason}"
        try:
            st = os.stat(target)
        except OSError as exc:
            raise _changed_or_failed(version, rel, exc) from exc
        expected = FileStat(rel, st.st_size, st.st_mtime_ns)
        self._stage_file(target, rel, dest, expected, st.st_ino, plan, version)
        return None

    def _stage_file(self, path: Path, rel: str, dest: Path, expected: FileStat,
                    inode: int | None, plan: _Plan, version: FolderVersion) -> None:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not plan.copying:
            try:
                os.link(path, target, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _LINK_FALLBACK_ERRNOS:
                    raise _changed_or_failed(version, rel, exc) from exc
                plan.copying = True
                self._check_space(version, plan, exc)
        source_inode = _copy_file(path, target, version, rel) if plan.copying else None
        st = os.lstat(target)  # the inode we actually linked, or the copy
        if source_inode is None:
            source_inode = st.st_ino
        if (st.st_size, st.st_mtime_ns) != (expected.size, expected.mtime_ns) or (
            inode is not None and source_inode != inode
        ):
            raise StagingError(
                f"{version.ref.name}/{rel} changed after {version.ref.name} was detected complete",
                hint="the folder is being rewritten; it will be detected again once it settles",
            )
        plan.staged.append(FileStat(rel, st.st_size, st.st_mtime_ns))

    def _check_space(self, version: FolderVersion, plan: _Plan, cause: OSError) -> None:
        """Before the first copy: the rest of the folder must fit, with a margin to spare."""
        done = {f.path for f in plan.staged}
        needed = sum(f.size for f in version.files if f.path not in done)
        free = shutil.disk_usage(self.root).free
        logger.warning("cannot hard-link %s into %s (%s): copying instead", version.ref.name,
                       self.root, os.strerror(cause.errno or 0),
                       extra={"folder": version.ref.name, "bytes": needed, "free": free})
        if needed + FREE_SPACE_MARGIN_BYTES > free:
            raise StagingError(
                f"cannot stage {version.ref.name}: copying it to {self.root} needs {needed} "
                f"bytes (+{FREE_SPACE_MARGIN_BYTES} margin) but {free} are free",
                hint="free disk space, or put the state dir on the output dir's filesystem so "
                     "files are hard-linked instead of copied",
            )


def _checked_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"{key!r} is not a version key")
    return key


def _safe_rel(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{rel!r} is not a relative path inside the folder")
    return rel


def _changed_or_failed(version: FolderVersion, rel: str, exc: OSError) -> StagingError:
    if exc.errno == errno.ENOENT:
        return StagingError(
            f"{version.ref.name}/{rel} disappeared before it could be staged",
            hint="the folder was rotated away or rewritten before staging",
        )
    return StagingError(
        f"cannot stage {version.ref.name}/{rel}: {exc.strerror or exc}",
        hint="check permissions of the staging dir and that it runs as the trainer's UID",
    )


def _lstat_mode(path: Path, version: FolderVersion, rel: str) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError as exc:
        raise _changed_or_failed(version, rel, exc) from exc


def _copy_file(path: Path, target: Path, version: FolderVersion, rel: str) -> int:
    """Copy bytes and mtime; return the source's inode. It must not change while copied."""
    try:
        src_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _changed_or_failed(version, rel, exc) from exc
    with os.fdopen(src_fd, "rb") as src, open(target, "wb") as dst:
        before = os.fstat(src.fileno())
        while chunk := src.read(COPY_CHUNK_BYTES):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
        after = os.fstat(src.fileno())
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise StagingError(f"{version.ref.name}/{rel} changed while it was copied",
                           hint="the folder is being rewritten; it will be detected again")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    return before.st_ino


def _fsync_tree(root: Path) -> None:
    """Make the new directory entries (the links) durable before the rename publishes them."""
    for directory in sorted((d for d, _sub, _files in os.walk(root)), key=len, reverse=True):
        fsync_dir(Path(directory))
    fsync_dir(root.parent)
