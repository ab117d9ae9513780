"""hf_xet's failures, classified by what they mean rather than by their Python type.

hf_xet reports every HTTP failure of the Xet token route and of the storage service as the
builtin `ConnectionError`, the status only in its message, e.g.
`Network error: Request error: HTTP status client error (404 Not Found), domain: http://host/api/
models/alice/r/xet-write-token/main`. It also raises `XetAuthenticationError` (a PermissionError)
and `XetObjectNotFoundError`. The rules:

    401 / 403 / XetAuthenticationError   AuthError, the same line as a 401/403 from the Hub API
    404 on the Xet token route           XetUnavailableError: this server has no Xet storage
    408, 429, 5xx, no status at all      TransientError (resets, timeouts, refused connections)
    413 or a quota/size refusal          PermanentError
    any other 4xx from storage           TransientError: a refused xorb or shard is re-sent whole
                                         by the next attempt, bounded by the retry policy
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from uploader.errors import (
    PermanentError,
    RateLimitedError,
    TransientError,
    UploaderError,
    XetUnavailableError,
)

_STATUS_RE = re.compile(r"\((\d{3})(?: [^)]*)?\)")
_DOMAIN_RE = re.compile(r"domain: (\S+)")
_TOKEN_ROUTE_RE = re.compile(r"/xet-(?:read|write)-token(?:/|$)")
_PERMANENT_WORDS = ("quota", "too large", "exceeds", "payload too large", "storage limit")
_RETRYABLE_STATUS = frozenset({408})
_SERVER_ERROR_MIN = 500
PAYLOAD_TOO_LARGE = 413

XET_HINT = "hf_xet's storage service failed; the uploader retries with backoff"
NO_XET_HINT = "use --transfer auto (falls back to LFS) or --transfer lfs for this endpoint"
QUOTA_HINT = "the storage refused the size: check the account's storage quota and file sizes"


def _xet_types() -> tuple[type[BaseException], ...]:
    try:
        import hf_xet
    except ImportError:
        return ()
    return tuple(t for t in (getattr(hf_xet, "XetAuthenticationError", None),
                             getattr(hf_xet, "XetObjectNotFoundError", None)) if t is not None)


def is_xet_error(exc: BaseException) -> bool:
    """hf_xet's own exception types, or the plain builtin ConnectionError it raises."""
    return type(exc) is ConnectionError or isinstance(exc, _xet_types())


def status_of(message: str) -> int | None:
    match = _STATUS_RE.search(message)
    return int(match.group(1)) if match else None


def _url_of(message: str) -> str:
    match = _DOMAIN_RE.search(message)
    return match.group(1).rstrip(",.") if match else ""


def classify_xet(exc: BaseException, what: str, detail: str) -> UploaderError | None:
    """The uploader error for an hf_xet failure; None when `exc` did not come from hf_xet.

    `detail` is the exception's message already scrubbed and cut to one line by the caller.
    """
    if not is_xet_error(exc):
        return None
    from uploader.retry import auth_error

    message = str(exc)
    url = _url_of(message)
    parts = urlsplit(url)
    host = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the Xet storage service"
    status = status_of(message)
    if type(exc).__name__ == "XetAuthenticationError":
        status = status or 401
    prefix = f"{what} failed: Xet: "
    if status in (401, 403):
        return auth_error(status, detail, prefix, host)
    if status == 404 and _TOKEN_ROUTE_RE.search(parts.path or message):
        return XetUnavailableError(f"{what} failed: {host} has no Xet storage (404 on its Xet "
                                   "token route)", NO_XET_HINT)
    if type(exc).__name__ == "XetObjectNotFoundError":
        return PermanentError(f"{prefix}object not found: {detail}",
                              "the file is missing from Xet storage; it is uploaded again")
    low = message.lower()
    if status == PAYLOAD_TOO_LARGE or any(word in low for word in _PERMANENT_WORDS):
        return PermanentError(f"{prefix}{detail}", QUOTA_HINT)
    if status == 429:
        return RateLimitedError(f"{what} rate-limited by Xet storage (HTTP 429): {detail}", 0.0,
                                "the uploader waits and retries")
    if status is None or status in _RETRYABLE_STATUS or status >= _SERVER_ERROR_MIN:
        return TransientError(f"{prefix}{detail}", XET_HINT)
    return TransientError(f"{prefix}storage refused the upload (HTTP {status}): {detail}",
                          XET_HINT)
