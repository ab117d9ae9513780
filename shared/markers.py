"""Completion markers: the trainer's word that a folder is complete, and what it contained.

One JSON file per folder in `<output_dir>/.complete/` (outside the folder, so writing it cannot
touch the folder's mtime, and never matching `checkpoint-*`, so rotation never sees it). It is
written atomically, only after every file of the folder is final, and lists each file with its
size and mtime_ns. A marker whose files no longer match the folder is stale: the folder was
rewritten after the marker and must be judged afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.fsutil import atomic_write_json
from shared.layout import Kind, classify, marker_path, markers_dir

SCHEMA_VERSION = 1


class MarkerError(ValueError):
    """A marker file exists but cannot be trusted (unreadable, malformed, wrong folder)."""


@dataclass(frozen=True, order=True)
class FileStat:
    path: str  # relative to the folder, '/'-separated
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Marker:
    run_id: str
    folder: str
    step: int
    kind: Kind
    written_at: str  # ISO 8601 UTC; the repo id's timestamp is derived from it
    files: tuple[FileStat, ...]
    origin_repo: str | None = None  # set when the checkpoint was restored from the Hub
    schema: int = field(default=SCHEMA_VERSION)

    @property
    def written_datetime(self) -> datetime:
        return parse_utc(self.written_at)

    def matches(self, folder_path: Path) -> bool:
        """True when the folder holds exactly the files the marker lists, unchanged."""
        try:
            return snapshot_files(folder_path) == self.files
        except FileNotFoundError:
            return False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["files"] = [asdict(f) for f in self.files]
        return data

    @classmethod
    def from_json(cls, data: Any) -> Marker:
        try:
            marker = cls(
                run_id=str(data["run_id"]),
                folder=str(data["folder"]),
                step=int(data["step"]),
                kind=Kind(data["kind"]),
                written_at=str(data["written_at"]),
                files=tuple(
                    sorted(FileStat(str(f["path"]), int(f["size"]), int(f["mtime_ns"]))
                           for f in data["files"])
                ),
                origin_repo=data.get("origin_repo"),
                schema=int(data.get("schema", SCHEMA_VERSION)),
            )
            parse_utc(marker.written_at)
        except (KeyError, TypeError, ValueError) as exc:
            raise MarkerError(f"malformed completion marker: {exc}") from exc
        if marker.schema > SCHEMA_VERSION:
            raise MarkerError(
                f"marker schema {marker.schema} is newer than this version understands "
                f"({SCHEMA_VERSION}); upgrade checkpoint-sidecar"
            )
        return marker


def snapshot_files(folder_path: Path) -> tuple[FileStat, ...]:
    """Every non-directory entry under a folder with its size and mtime_ns, sorted.

    Symlinks are recorded as themselves (lstat), never followed: both sides call this same
    function, so a marker and a later look at the folder always agree on what a file is.
    """
    root = Path(folder_path)
    stats: list[FileStat] = []
    pending = [root]
    while pending:
        current = pending.pop()
        with os.scandir(current) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
                rel = Path(entry.path).relative_to(root).as_posix()
                stats.append(FileStat(rel, st.st_size, st.st_mtime_ns))
    return tuple(sorted(stats))


def build_marker(
    output_dir: Path,
    folder_name: str,
    *,
    run_id: str,
    step: int,
    now: datetime | None = None,
    origin_repo: str | None = None,
) -> Marker:
    """A marker describing the folder as it is now. Call only once every file is final."""
    ref = classify(folder_name)
    if ref is None:
        raise ValueError(f"{folder_name!r} is not a checkpoint folder or the final folder")
    if ref.step is not None and ref.step != step:
        raise ValueError(f"{folder_name!r} holds step {ref.step}, not {step}")
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return Marker(
        run_id=run_id,
        folder=folder_name,
        step=step,
        kind=ref.kind,
        written_at=format_utc(when),
        files=snapshot_files(Path(output_dir) / folder_name),
        origin_repo=origin_repo,
    )


def write_marker(output_dir: Path, marker: Marker) -> Path:
    path = marker_path(output_dir, marker.folder)
    atomic_write_json(path, marker.to_json())
    return path


def read_marker(output_dir: Path, folder_name: str) -> Marker | None:
    """The folder's marker, None when there is none; MarkerError when it cannot be trusted."""
    path = marker_path(output_dir, folder_name)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MarkerError(f"cannot read marker {path}: {exc}") from exc
    try:
        marker = Marker.from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise MarkerError(f"marker {path} is not JSON: {exc}") from exc
    if marker.folder != folder_name:
        raise MarkerError(f"marker {path} names folder {marker.folder!r}, not {folder_name!r}")
    return marker


def remove_marker(output_dir: Path, folder_name: str) -> bool:
    try:
        marker_path(output_dir, folder_name).unlink()
        return True
    except FileNotFoundError:
        return False


def remove_orphan_markers(output_dir: Path) -> list[str]:
    """Delete markers whose folder no longer exists (rotation); return the folder names."""
    removed: list[str] = []
    directory = markers_dir(output_dir)
    if not directory.is_dir():
        return removed
    for path in directory.glob("*.json"):
        folder = path.name[: -len(".json")]
        if classify(folder) is not None and not (Path(output_dir) / folder).is_dir():
            path.unlink(missing_ok=True)
            removed.append(folder)
    return sorted(removed)


def format_utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return when.astimezone(UTC)
