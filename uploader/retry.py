"""One retry policy for every Hub call: classify the failure, then retry only what may pass.

`classify` turns whatever the Hub client raised into the uploader's error tree
(`uploader.errors`): connection errors, timeouts, 408, 429 and 5xx are `TransientError`
(429 as `RateLimitedError`), 401/403 are `AuthError`, every other 4xx and every local
validation error is `PermanentError`. `call_with_retry` retries `TransientError` only, with
exponential backoff and jitter, a bounded number of times per call, and can be interrupted by a
`threading.Event` so shutdown never waits out a long rate-limit pause.

A rate limit is neither a failure nor a reason to give up: a 429 that announces a wait within
`max_rate_limit_wait` is waited out exactly, logged with the time the call resumes, and does not
use up an attempt, however often it comes. A 429 without a wait counts as an attempt like any
transient error; one announcing a longer wait ends the call at once as rate-limited, and the
pipeline postpones the checkpoint until the Hub's time (`uploader.http_client` routes the
library's own retries here, so no inner loop sleeps past the cap either).

Messages are one line and scrubbed of secrets: the configured token (`register_secret`) and
anything shaped like a Hub token never reach a log line or an exception.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import httpx2
from huggingface_hub.errors import (
    BadRequestError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import parse_ratelimit_headers
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from shared.env import HUB_TOKEN_PATTERN, REDACTED
from uploader.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RateLimitedError,
    TransientError,
    UploaderError,
    VerificationError,
)
from uploader.xet_errors import classify_xet

log = logging.getLogger(__name__)
T = TypeVar("T")

# Status codes a later attempt may not see (the same set huggingface_hub's own backoff uses).
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Any other 5xx is also a server-side failure, so retryable; 4xx other than 408/429 never is.
SERVER_ERROR_MIN = 500
# How deep to follow __cause__/__context__ when an HTTP error is wrapped (LFS uploads,
# hf_hub_download's LocalEntryNotFoundError).
MAX_CAUSE_DEPTH = 8
# Server messages can be long, multi-line JSON: keep the one-line message readable.
MAX_DETAIL_CHARS = 240

TOKEN_HINT = "set HF_TOKEN or HF_TOKEN_FILE to a valid write token (https://huggingface.co/settings/tokens)"
READ_ONLY_HINT = "set HF_TOKEN or HF_TOKEN_FILE to a token with the write role"
NAMESPACE_HINT = (
    "set HUB_NAMESPACE to your user or an org you can write to, or set HF_TOKEN or HF_TOKEN_FILE "
    "to a token of that namespace"
)
TRANSIENT_HINT = "the Hub or the network failed; the uploader retries with backoff"
# How a server says an upload's bytes do not hash to the oid it was announced with.
CONTENT_MISMATCH = "does not match"

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx2.TransportError,
    TimeoutError,
    ConnectionError,
)
_STATUS_ERRORS: tuple[type[BaseException], ...] = (
    HfHubHTTPError,
    httpx2.HTTPStatusError,
)
_RECOGNISED = (*_STATUS_ERRORS, *_TRANSPORT_ERRORS, HFValidationError)
_HUB_TOKEN_RE = HUB_TOKEN_PATTERN
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
# Pre-signed upload URLs carry their credential in the query string (X-Amz-Signature...).
_URL_QUERY_RE = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']+")
_REDACTED = REDACTED

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret (the token) so `scrub` removes it from every message from now on.

    Process-global on purpose: an error can be classified far from the code that knows the
    token, and a rotated token keeps the old value registered, which is what we want.
    """
    if value and len(value) >= 4:  # shorter strings would redact ordinary words
        with _secrets_lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """Remove registered secrets, Hub-token-shaped strings, bearer credentials and URL query
    strings (pre-signed upload URLs)."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    text = _HUB_TOKEN_RE.sub(_REDACTED, text)
    text = _URL_QUERY_RE.sub(rf"\g<1>?{_REDACTED}", text)
    return _BEARER_RE.sub(rf"\g<1>{_REDACTED}", text)


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Collapse whitespace and cut, so every message prints as one short line."""
    flat = " ".join(scrub(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call is retried. One round = `attempts` tries; the caller decides on more."""

    attempts: int = 6
    initial_wait: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0
    max_rate_limit_wait: float = 3600.0  # cap on a wait the Hub announced with a 429

    @classmethod
    def immediate(cls, attempts: int = 3) -> RetryPolicy:
        """No waiting at all, for tests."""
        return cls(attempts=attempts, initial_wait=0.0, max_wait=0.0, jitter=0.0,
                   max_rate_limit_wait=0.0)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) when nothing was announced:
        doubling from `initial_wait`, plus up to `jitter` seconds, capped at `max_wait`."""
        exponential = self.initial_wait * 2 ** max(0, attempt - 1)
        return min(self.max_wait, exponential + random.uniform(0, self.jitter))

    def wait_for(self, error: UploaderError, attempt: int) -> float:
        """Exactly the announced wait for a 429 (capped), else the backoff."""
        if isinstance(error, RateLimitedError) and error.wait_seconds > 0:
            return min(error.wait_seconds, self.max_rate_limit_wait)
        return self.backoff(attempt)

    def beyond_cap(self, error: UploaderError | None) -> bool:
        """A 429 announcing a wait longer than the cap ends the attempt as rate-limited: the
        pipeline postpones the checkpoint until then instead of waiting inside a call."""
        return (isinstance(error, RateLimitedError)
                and error.wait_seconds > self.max_rate_limit_wait)

    def honours(self, error: UploaderError) -> bool:
        """True for a 429 whose announced wait is within the cap: waited out without using up
        an attempt (the Hub said when it will accept the call; retrying then is no failure)."""
        return (isinstance(error, RateLimitedError)
                and 0 < error.wait_seconds <= self.max_rate_limit_wait)


# ---------------------------------------------------------------------------------- classify


def classify(exc: BaseException, what: str) -> UploaderError:
    """Map any exception a Hub call raised to the uploader's error tree (see module doc)."""
    if isinstance(exc, UploaderError):
        return exc
    if isinstance(exc, OfflineModeIsEnabled):  # a ConnectionError, but no retry can pass it
        return ConfigError(f"{what} failed: HF_HUB_OFFLINE is set",
                           "unset HF_HUB_OFFLINE: the uploader needs the Hub")
    cause = _find_cause(exc)
    if isinstance(cause, UploaderError):  # classified where it happened (uploader.http_client)
        return cause
    wrapper = "" if cause is exc else f"{one_line(str(exc), 120)}: "
    xet = classify_xet(cause, what, one_line(str(cause)) or "no details")
    if xet is not None:
        return xet
    if isinstance(cause, _STATUS_ERRORS):
        return _classify_status(cause, what, wrapper)
    if isinstance(cause, _TRANSPORT_ERRORS):
        detail = one_line(str(cause)) or "no details"
        return TransientError(f"{what} failed: {wrapper}{type(cause).__name__}: {detail}",
                              TRANSIENT_HINT)
    if isinstance(cause, HFValidationError):
        return PermanentError(f"{what} refused before sending: {one_line(str(cause))}",
                              "fix the repo id (letters, digits, '-', '_', '.'; no '--' or '..')")
    return PermanentError(
        f"{what} failed: {type(exc).__name__}: {one_line(str(exc))}",
        "unexpected error; see the uploader log and report it if it persists",
    )


def _find_cause(exc: BaseException) -> BaseException:
    """The first recognisable error in the chain (LFS wraps HTTP errors in RuntimeError)."""
    seen: BaseException | None = exc
    for _ in range(MAX_CAUSE_DEPTH):
        if seen is None:
            break
        if isinstance(seen, (UploaderError, *_RECOGNISED)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _status_of(exc: BaseException) -> tuple[int | None, httpx2.Response | None]:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return (status if isinstance(status, int) else None), response


def _classify_status(exc: BaseException, what: str, wrapper: str) -> UploaderError:
    status, response = _status_of(exc)
    detail = _server_detail(exc)
    base = f"{what} failed: {wrapper}HTTP {status}"
    if status is None:
        return TransientError(f"{what} failed: {wrapper}{one_line(str(exc))}", TRANSIENT_HINT)
    if status == 429:
        wait = announced_wait(response)
        text = f"{what} rate-limited by the Hub (HTTP 429)"
        text += f", retry in {wait:g}s" if wait else ", no wait announced"
        return RateLimitedError(f"{text}: {detail}" if detail else text, wait or 0.0,
                                "the uploader waits and retries; fewer repos/commits per hour help")
    if status in RETRYABLE_STATUS or status >= SERVER_ERROR_MIN:
        return TransientError(f"{base}: {detail}" if detail else base, TRANSIENT_HINT)
    if status in (401, 403) and not isinstance(exc, RepositoryNotFoundError):
        return auth_error(status, detail, f"{what} failed: {wrapper}", _host_of(response))
    if status == 400 and CONTENT_MISMATCH in detail.lower():
        # The bytes that arrived are not those we hashed (changed on disk with its mtime kept,
        # or damaged in transit): the pipeline re-reads, re-hashes and uploads again.
        return VerificationError(f"{base}: {detail}", "the files are hashed and uploaded again")
    if isinstance(exc, RepositoryNotFoundError):
        return PermanentError(f"{base}: repository not found or not visible to this token",
                              "check the repo id and that the token can read it")
    hint = ("fix the README metadata" if isinstance(exc, BadRequestError) and "yaml" in
            detail.lower() else "this needs a human: check the message, the repo id and quota")
    return PermanentError(f"{base}: {detail}" if detail else base, hint)


def auth_error(status: int, detail: str, prefix: str, host: str) -> AuthError:
    """The one line for a 401/403, whichever service answered it (Hub API or Xet)."""
    low = detail.lower()
    if status == 401:
        return AuthError(f"{prefix}the token was rejected by {host} (HTTP 401: invalid "
                         f"or expired token){': ' + detail if detail else ''}", TOKEN_HINT)
    if "read" in low and ("role" in low or "read-only" in low or "read access" in low):
        return AuthError(f"{prefix}the token is read-only (HTTP 403): {detail}",
                         READ_ONLY_HINT)
    if "namespace" in low or "rights" in low or "permission" in low:
        return AuthError(f"{prefix}the token cannot write this namespace (HTTP 403): "
                         f"{detail}", NAMESPACE_HINT)
    return AuthError(f"{prefix}forbidden (HTTP 403){': ' + detail if detail else ''}",
                     f"{READ_ONLY_HINT}, and check HUB_NAMESPACE")


def _server_detail(exc: BaseException) -> str:
    """The server's own words when it gave some, else the client's message, one line."""
    server = getattr(exc, "server_message", None)
    if server:
        return one_line(str(server))
    text = str(exc).strip()
    return one_line(text) if text else ""


def announced_wait(response: object) -> float | None:
    """Seconds the Hub asked us to wait: `RateLimit: ...;r=0;t=N` first, then `Retry-After: N`."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        return float(info.reset_in_seconds)
    return parse_retry_after(headers.get("Retry-After"))


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _host_of(response: object) -> str:
    try:  # httpx raises RuntimeError for a response built without a request
        url = str(response.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        url = ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the Hub"


# ----------------------------------------------------------------------------------- retrying


def resume_time(wait_seconds: float) -> str:
    """Wall-clock UTC time, ISO 8601 to the second, at which a wait starting now ends."""
    at = datetime.now(UTC) + timedelta(seconds=wait_seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def call_with_retry(
    policy: RetryPolicy,
    what: str,
    fn: Callable[[], T],
    *,
    on_retry: Callable[[UploaderError, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> T:
    """Run `fn`, retrying `TransientError`s up to `policy.attempts` times in all; 429s with an
    announced wait within the cap are waited out on top of that (`RetryPolicy.honours`).

    Raises the last classified error when the attempts are spent, at once for a permanent
    error, and as soon as `stop` is set (before an attempt or during a wait).
    `on_retry(error, attempt, wait)` is called before each wait.
    """
    run = _Run(policy, what, on_retry, sleep, stop)
    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=run.should_stop,
        wait=run.wait,
        sleep=run.sleep,
        before_sleep=run.before_sleep,
        reraise=True,
    )
    return retrying(run.attempt, fn)


@dataclass
class _Run:
    """The state of one call_with_retry: tenacity's hooks, and the last classified error."""

    policy: RetryPolicy
    what: str
    on_retry: Callable[[UploaderError, int, float], None] | None
    sleep_fn: Callable[[float], None]
    stop: threading.Event | None
    last: UploaderError | None = None
    honoured: int = 0  # rate limits waited out: tries that did not use up an attempt

    def attempt(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            error = classify(exc, self.what)
            self.last = error
            if self.policy.honours(error):
                self.honoured += 1
            if error is exc:
                raise
            raise error from None  # the original may carry request details; ours is scrubbed

    def should_stop(self, state: RetryCallState) -> bool:
        stopping = self.stop is not None and self.stop.is_set()
        counted = state.attempt_number - self.honoured
        return (stopping or counted >= max(1, self.policy.attempts)
                or self.policy.beyond_cap(self.last))

    def wait(self, state: RetryCallState) -> float:
        assert self.last is not None
        return self.policy.wait_for(self.last, state.attempt_number)

    def before_sleep(self, state: RetryCallState) -> None:
        error, seconds, attempt = self.last, state.upcoming_sleep, state.attempt_number
        assert error is not None
        if isinstance(error, RateLimitedError):
            self._log_rate_limit(error, seconds)
        else:
            log.warning(
                "retrying %s in %.1fs after attempt %d/%d: %s", self.what, seconds, attempt,
                self.policy.attempts, error.message,
                extra={"what": self.what, "attempt": attempt, "wait_s": seconds,
                       "error_class": type(error).__name__},
            )
        if self.on_retry is not None:
            self.on_retry(error, attempt, seconds)

    def _log_rate_limit(self, error: RateLimitedError, seconds: float) -> None:
        """The line operators look for: when the call resumes, and whether it cost an attempt."""
        resume_at = resume_time(seconds)
        log.warning(
            "%s rate-limited by the Hub: waiting %.0fs, resuming at %s", self.what, seconds,
            resume_at,
            extra={"what": self.what, "wait_s": seconds, "announced_s": error.wait_seconds,
                   "resume_at": resume_at, "counts_as_attempt": not self.policy.honours(error),
                   "error_class": type(error).__name__, "error": error.message},
        )

    def sleep(self, seconds: float) -> None:
        """Wait, but give up at once (raising the last error) when `stop` is set."""
        if self.stop is not None and self.sleep_fn is time.sleep:
            interrupted = self.stop.wait(seconds)
        else:
            if self.stop is None or not self.stop.is_set():
                self.sleep_fn(seconds)
            interrupted = self.stop is not None and self.stop.is_set()
        if interrupted and self.last is not None:
            log.info("stop requested: giving up %s", self.what, extra={"what": self.what})
            raise self.last
