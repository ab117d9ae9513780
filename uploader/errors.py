"""The uploader's error tree. Callers retry on `TransientError` and never on the rest.

    UploaderError                 anything the uploader raises on purpose; carries a hint
    +-- ConfigError               bad settings or environment: exit 2 with one line, no traceback
    +-- TransientError            worth retrying: connection errors, timeouts, 408, 429, 5xx
    |   +-- RateLimitedError      429 with a wait the Hub announced (Retry-After / RateLimit t=)
    +-- PermanentError            retrying cannot help: 401, 403, invalid name, quota, other 4xx
    |   +-- AuthError             401/403: re-read the token file, retry next round, never storm
    |   +-- XetUnavailableError   the endpoint has no Xet storage (404 on its Xet token route)
    +-- VerificationError         the remote copy does not match the local bytes
    +-- StagingError              the snapshot of a folder could not be made (space, permissions)
    +-- LockHeldError             another uploader holds the state dir
"""

from __future__ import annotations


class UploaderError(Exception):
    """Base class. `hint` is the one-line fix printed after the message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(UploaderError):
    """Invalid configuration: a setting, a file or the token. The CLI exits 2."""


class TransientError(UploaderError):
    """A failure that a later attempt may not see."""


class RateLimitedError(TransientError):
    def __init__(self, message: str, wait_seconds: float, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.wait_seconds = wait_seconds


class PermanentError(UploaderError):
    """A failure that retrying will not fix without a human (or a rotated secret)."""


class AuthError(PermanentError):
    """401/403: the token is invalid, read-only, or cannot write this namespace."""


class XetUnavailableError(PermanentError):
    """The endpoint serves no Xet token route: with `--transfer auto`, LFS is used instead."""


class VerificationError(UploaderError):
    """The remote files differ from the local ones (missing file, size or hash)."""


class StagingError(UploaderError):
    """A folder could not be snapshotted into the staging area."""


class LockHeldError(UploaderError):
    def __init__(self, message: str, pid: int | None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.pid = pid
