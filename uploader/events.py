"""What the pipeline tells the rest of the uploader: the console block, W&B, pruning.

Listeners are called from the upload thread and must never raise or block; `FanoutEvents`
shields the upload from a listener that breaks that rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from shared.hashing import FileDigest
from shared.manifest import ManifestFile
from uploader.errors import UploaderError
from uploader.state import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadResult:
    record: Record
    seconds: float
    bytes: int
    adopted: bool
    files: tuple[ManifestFile, ...] = ()  # what the manifest lists: path, size, sha256


@dataclass(frozen=True)
class ExpectedFile:
    """One file a verified commit must hold (the `LocalFile` fields `compare` reads)."""

    path_in_repo: str
    digest: FileDigest


class Events(Protocol):
    """What the pipeline reports (W&B, pruning, the console block); must never raise or block."""

    def verified(self, result: UploadResult) -> None: ...

    def failed(self, record: Record, error: UploaderError) -> None: ...


class NoEvents:
    def verified(self, result: UploadResult) -> None:
        pass

    def failed(self, record: Record, error: UploaderError) -> None:
        pass


class FanoutEvents:
    """Several listeners; one that raises is logged and never stops the others or the upload."""

    def __init__(self, *targets: Events) -> None:
        self.targets = targets

    def verified(self, result: UploadResult) -> None:
        for target in self.targets:
            try:
                target.verified(result)
            except Exception:
                log.exception("event listener failed", extra={"listener": type(target).__name__})

    def failed(self, record: Record, error: UploaderError) -> None:
        for target in self.targets:
            try:
                target.failed(record, error)
            except Exception:
                log.exception("event listener failed", extra={"listener": type(target).__name__})
