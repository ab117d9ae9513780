"""Repo ids exactly as the seed names them, and their parsing back.

    {namespace}/{prefix}-checkpoint-{step}-{YYYYmmdd_HHMMSS}
    {namespace}/{prefix}-lora-final-{YYYYmmdd_HHMMSS}

The timestamp (UTC) comes from the local checkpoint alone - the marker's written time, or for a
folder without a marker the mtime of its `trainer_state.json` - so that after a crash, even with
the uploader's state lost, the same repo id comes out again and no second repo is created.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.layout import TRAINER_STATE_FILENAME, Kind
from shared.markers import Marker

DEFAULT_PREFIX = "llama3-medical-ner"
TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
MAX_NAME_LENGTH = 96  # the Hub's limit for each of namespace and name

_PART_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_CHECKPOINT_RE = re.compile(r"(?P<prefix>.+)-checkpoint-(?P<step>0|[1-9][0-9]*)-(?P<ts>\d{8}_\d{6})")
_FINAL_RE = re.compile(r"(?P<prefix>.+)-lora-final-(?P<ts>\d{8}_\d{6})")
# The longest suffix a prefix must leave room for: "-checkpoint-<step>-YYYYmmdd_HHMMSS" with a
# step of up to 9 digits.
_LONGEST_SUFFIX = len("-checkpoint-") + 9 + 1 + len("YYYYmmdd_HHMMSS")


class RepoNameError(ValueError):
    """A namespace, prefix or repo id the Hub would refuse; the message says which and why."""


@dataclass(frozen=True)
class RepoName:
    namespace: str
    prefix: str
    kind: Kind
    step: int | None
    timestamp: datetime

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def name(self) -> str:
        ts = format_timestamp(self.timestamp)
        if self.kind is Kind.FINAL:
            return f"{self.prefix}-lora-final-{ts}"
        return f"{self.prefix}-checkpoint-{self.step}-{ts}"


def format_timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def validate_part(value: str, what: str) -> str:
    """Check a namespace or repo name against the Hub's rules; return it unchanged."""
    problem = None
    if not value:
        problem = "is empty"
    elif len(value) > MAX_NAME_LENGTH:
        problem = f"is {len(value)} characters long; the Hub allows at most {MAX_NAME_LENGTH}"
    elif not _PART_RE.fullmatch(value):
        problem = (
            "may use only letters, digits, '-', '_' and '.', and must not start or end with "
            "'-' or '.'"
        )
    elif "--" in value or ".." in value:
        problem = "must not contain '--' or '..'"
    elif value.endswith(".git"):
        problem = "must not end with '.git'"
    if problem:
        raise RepoNameError(f"{what} {value!r} {problem}")
    return value


def validate_prefix(prefix: str) -> str:
    """A prefix must leave room for the longest suffix within the Hub's name limit."""
    validate_part(prefix, "repo prefix")
    room = MAX_NAME_LENGTH - _LONGEST_SUFFIX
    if len(prefix) > room:
        raise RepoNameError(
            f"repo prefix {prefix!r} is {len(prefix)} characters long; at most {room} leave room "
            f"for '-checkpoint-<step>-<timestamp>' within the Hub's {MAX_NAME_LENGTH}"
        )
    return prefix


def make_repo_name(
    namespace: str, prefix: str, kind: Kind, step: int | None, timestamp: datetime
) -> RepoName:
    validate_part(namespace, "namespace")
    validate_prefix(prefix)
    if kind is Kind.CHECKPOINT and (step is None or step < 0):
        raise RepoNameError(f"a checkpoint repo needs a non-negative step, not {step!r}")
    name = RepoName(namespace, prefix, kind, step if kind is Kind.CHECKPOINT else None,
                    timestamp.astimezone(UTC).replace(microsecond=0))
    validate_part(name.name, "repo name")
    return name


def parse_repo_id(repo_id: str) -> RepoName:
    """Parse a repo id made by `make_repo_name` back into its parts; RepoNameError otherwise."""
    namespace, sep, name = repo_id.partition("/")
    if not sep:
        raise RepoNameError(f"repo id {repo_id!r} has no namespace")
    validate_part(namespace, "namespace")
    validate_part(name, "repo name")
    if match := _CHECKPOINT_RE.fullmatch(name):
        kind, step = Kind.CHECKPOINT, int(match["step"])
    elif match := _FINAL_RE.fullmatch(name):
        kind, step = Kind.FINAL, None
    else:
        raise RepoNameError(f"repo id {repo_id!r} is not a checkpoint or final adapter repo")
    try:
        timestamp = parse_timestamp(match["ts"])
    except ValueError as exc:
        raise RepoNameError(f"repo id {repo_id!r} has an invalid timestamp: {exc}") from exc
    return RepoName(namespace, match["prefix"], kind, step, timestamp)


def folder_timestamp(folder_path: Path, marker: Marker | None) -> datetime:
    """The repo timestamp of a local folder, recomputable after any crash.

    The marker's written time when the trainer wrote one; otherwise the mtime of
    `trainer_state.json` (written last by Trainer; hard links keep it); for a folder without
    either (a final adapter from a trainer that writes no markers), its newest file's mtime.
    """
    if marker is not None:
        return marker.written_datetime
    folder_path = Path(folder_path)
    state = folder_path / TRAINER_STATE_FILENAME
    try:
        mtime = state.stat().st_mtime
    except FileNotFoundError:
        mtimes = [
            os.lstat(os.path.join(root, f)).st_mtime
            for root, _dirs, files in os.walk(folder_path)
            for f in files
        ]
        if not mtimes:
            raise FileNotFoundError(f"{folder_path} holds no files to date it by") from None
        mtime = max(mtimes)
    return datetime.fromtimestamp(mtime, UTC)
