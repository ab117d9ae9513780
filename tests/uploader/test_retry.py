"""classify (table-driven, on the client's real exception objects) and call_with_retry."""

from __future__ import annotations

import threading

import httpx2
import pytest
from huggingface_hub.errors import HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import hf_raise_for_status

from uploader.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RateLimitedError,
    StagingError,
    TransientError,
    UploaderError,
    XetUnavailableError,
)
from uploader.retry import RetryPolicy, call_with_retry, classify, register_secret, scrub

CANARY = "hf_CanaryTokenDoNotLeak0123456789"
ENDPOINT = "http://127.0.0.1:9"


def hub_error(status: int, url: str = f"{ENDPOINT}/api/repos/create",
              headers: dict[str, str] | None = None, message: str | None = None) -> Exception:
    """The exception huggingface_hub raises for this response (via hf_raise_for_status)."""
    headers = dict(headers or {})
    if message:
        headers["X-Error-Message"] = message
    request = httpx2.Request("POST", url, headers={"authorization": f"Bearer {CANARY}"})
    response = httpx2.Response(status, headers=headers, json={"error": message or "x"},
                               request=request)
    try:
        hf_raise_for_status(response)
    except Exception as exc:
        return exc
    raise AssertionError(f"{status} did not raise")


def lfs_failure(cause: BaseException) -> RuntimeError:
    """What _commit_api raises when an LFS upload fails: RuntimeError from the HTTP error."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("Error while uploading 'model.safetensors' to the Hub.") from inner
    except RuntimeError as exc:
        return exc


def xet_error(status: str | None, path: str = "/v1/xorbs/default/abc") -> ConnectionError:
    """What hf_xet 1.8 raises for an HTTP failure (seen against devhub): a builtin
    ConnectionError whose message alone carries the status."""
    if status is None:
        return ConnectionError("Network error: Request error: error sending request for url "
                               f"(http://127.0.0.1:9/_xet/n{path}): connection closed")
    kind = "client" if status.startswith("4") else "server"
    return ConnectionError(f"Network error: Request error: HTTP status {kind} error ({status}), "
                           f"domain: http://127.0.0.1:9{path}")


TOKEN_ROUTE = "/api/models/alice/r/xet-write-token/main"

CASES = [
    # (exception, expected class, words the message must contain)
    (xet_error("404 Not Found", TOKEN_ROUTE), XetUnavailableError, ["no Xet storage"]),
    (xet_error("401 Unauthorized", TOKEN_ROUTE), AuthError, ["401", "rejected"]),
    (xet_error("403 Forbidden"), AuthError, ["403"]),
    (xet_error("503 Service Unavailable"), TransientError, ["Xet", "503"]),
    (xet_error("500 Internal Server Error"), TransientError, ["500"]),
    (xet_error("429 Too Many Requests"), RateLimitedError, ["429"]),
    (xet_error("400 Bad Request", "/v1/shards"), TransientError, ["refused", "400"]),
    (xet_error("413 Payload Too Large"), PermanentError, ["413"]),
    (xet_error(None), TransientError, ["connection closed"]),
    (xet_error("404 Not Found", "/v1/reconstructions/abc"), TransientError, ["404"]),
    (httpx2.ConnectError("connection refused"), TransientError, ["ConnectError"]),
    (httpx2.ReadTimeout("timed out"), TransientError, ["ReadTimeout"]),
    (httpx2.RemoteProtocolError("peer closed"), TransientError, ["RemoteProtocolError"]),
    (httpx2.ConnectTimeout("slow"), TransientError, ["ConnectTimeout"]),
    (ConnectionResetError("reset by peer"), TransientError, ["ConnectionResetError"]),
    (hub_error(408), TransientError, ["408"]),
    (hub_error(500), TransientError, ["500"]),
    (hub_error(502), TransientError, ["502"]),
    (hub_error(503), TransientError, ["503"]),
    (hub_error(504), TransientError, ["504"]),
    (hub_error(507), TransientError, ["507"]),
    (hub_error(429), RateLimitedError, ["429", "no wait announced"]),
    (hub_error(429, headers={"Retry-After": "17"}), RateLimitedError, ["retry in 17s"]),
    (hub_error(429, headers={"RateLimit": '"api";r=0;t=42'}), RateLimitedError, ["42s"]),
    (hub_error(401, message="Invalid credentials in Authorization header"), AuthError,
     ["rejected", "127.0.0.1:9", "HF_TOKEN"]),
    (hub_error(403, message="This token has a read role: it cannot write"), AuthError,
     ["read-only", "write role"]),
    (hub_error(403, message="You don't have the rights to write in namespace 'bob'"), AuthError,
     ["namespace", "HUB_NAMESPACE"]),
    (hub_error(400, url=f"{ENDPOINT}/api/validate-yaml",
               message='"base_model" must not be empty'), PermanentError, ["400", "base_model"]),
    (hub_error(404, url=f"{ENDPOINT}/api/models/a/b",
               headers={"X-Error-Code": "RepoNotFound"}), PermanentError, ["not found"]),
    (hub_error(413, message="Payload too large"), PermanentError, ["413"]),
    (hub_error(402, message="storage quota exceeded"), PermanentError, ["quota"]),
    (hub_error(409, message="conflict"), PermanentError, ["409"]),
    (HFValidationError("Cannot have -- or .. in repo_id: 'a/b--c'."), PermanentError,
     ["repo id", "--"]),
    (lfs_failure(hub_error(503, url=f"{ENDPOINT}/_lfs/x")), TransientError,
     ["model.safetensors", "503"]),
    (lfs_failure(httpx2.WriteError("broken pipe")), TransientError, ["WriteError"]),
    (lfs_failure(hub_error(403, url=f"{ENDPOINT}/_lfs/x", message="read role")), AuthError,
     ["model.safetensors"]),
    (ValueError("LFS batch API returned errors: quota"), PermanentError, ["quota"]),
    (OfflineModeIsEnabled("offline"), ConfigError, ["HF_HUB_OFFLINE"]),
]


@pytest.mark.parametrize(("exc", "expected", "words"), CASES,
                         ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(CASES)])
def test_classify(exc: Exception, expected: type[UploaderError], words: list[str]) -> None:
    error = classify(exc, "create repo alice/x")
    assert type(error) is expected
    text = error.one_line()
    assert "\n" not in text
    assert text.startswith("create repo alice/x")
    for word in words:
        assert word in text
    assert error.hint


def test_classify_rate_limit_wait_seconds() -> None:
    assert classify(hub_error(429, headers={"Retry-After": "17"}), "x").wait_seconds == 17
    ratelimit = {"RateLimit": '"api";r=0;t=42', "Retry-After": "5"}
    assert classify(hub_error(429, headers=ratelimit), "x").wait_seconds == 42
    assert classify(hub_error(429), "x").wait_seconds == 0  # none announced: backoff applies


def test_classify_passes_uploader_errors_through() -> None:
    error = StagingError("disk full")
    assert classify(error, "x") is error


def test_messages_never_contain_the_token() -> None:
    register_secret(CANARY)
    leaky = [
        hub_error(401, message=f"token {CANARY} is invalid"),
        hub_error(500, message=f"Authorization: Bearer {CANARY}"),
        httpx2.ConnectError(f"cannot connect with {CANARY}"),
        lfs_failure(hub_error(403, message=f"{CANARY} read role")),
        RuntimeError(f"weird {CANARY}"),
    ]
    for exc in leaky:
        error = classify(exc, "commit")
        assert CANARY not in str(error)
        assert CANARY not in error.one_line()


def test_scrub_hub_shaped_tokens_and_bearer() -> None:
    assert scrub("use hf_abcdefghijKLMNOP1234 now") == "use *** now"
    assert scrub("Authorization: Bearer secret-value") == "Authorization: Bearer ***"
    presigned = "PUT https://s3.example/bucket/obj?X-Amz-Signature=abc&X-Amz-Credential=k failed"
    assert scrub(presigned) == "PUT https://s3.example/bucket/obj?*** failed"


class Flaky:
    """A callable that raises the given exceptions in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_errors_are_retried_until_success() -> None:
    fn = Flaky(hub_error(503), httpx2.ReadTimeout("t"))
    waits: list[float] = []
    seen: list[tuple[str, int]] = []
    result = call_with_retry(RetryPolicy.immediate(3), "commit", fn, sleep=waits.append,
                             on_retry=lambda e, n, w: seen.append((type(e).__name__, n)))
    assert result == "ok" and fn.calls == 3
    assert waits == [0.0, 0.0]
    assert seen == [("TransientError", 1), ("TransientError", 2)]


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    fn = Flaky(hub_error(503), hub_error(502), hub_error(504), hub_error(500))
    with pytest.raises(TransientError, match="504"):
        call_with_retry(RetryPolicy.immediate(3), "commit", fn, sleep=lambda s: None)
    assert fn.calls == 3


@pytest.mark.parametrize("exc", [hub_error(401), hub_error(403, message="read role"),
                                 hub_error(400), HFValidationError("bad")])
def test_permanent_errors_are_not_retried(exc: Exception) -> None:
    fn = Flaky(exc)
    sleeps: list[float] = []
    with pytest.raises(PermanentError):
        call_with_retry(RetryPolicy.immediate(5), "create repo", fn, sleep=sleeps.append)
    assert fn.calls == 1 and sleeps == []


def test_rate_limit_waits_exactly_the_announced_time_capped() -> None:
    policy = RetryPolicy(attempts=3, initial_wait=1.0, max_wait=30.0, jitter=1.0,
                         max_rate_limit_wait=60.0)
    fn = Flaky(hub_error(429, headers={"Retry-After": "17"}),
               hub_error(429, headers={"RateLimit": '"api";r=0;t=3600'}))
    waits: list[float] = []
    # 17 s is waited out; an hour is beyond the cap: the call ends rate-limited, nothing slept.
    with pytest.raises(RateLimitedError) as caught:
        call_with_retry(policy, "commit", fn, sleep=waits.append)
    assert waits == [17.0] and fn.calls == 2
    assert caught.value.wait_seconds == 3600


def test_backoff_doubles_with_bounded_jitter() -> None:
    policy = RetryPolicy(attempts=6, initial_wait=1.0, max_wait=5.0, jitter=0.5)
    fn = Flaky(*[hub_error(503) for _ in range(5)])
    waits: list[float] = []
    call_with_retry(policy, "commit", fn, sleep=waits.append)
    for wait, base in zip(waits, [1, 2, 4, 5, 5], strict=True):
        assert base <= wait <= min(5.0, base + 0.5)


def test_rate_limit_without_announced_wait_uses_backoff() -> None:
    policy = RetryPolicy(attempts=2, initial_wait=2.0, max_wait=10.0, jitter=0.0)
    waits: list[float] = []
    call_with_retry(policy, "commit", Flaky(hub_error(429)), sleep=waits.append)
    assert waits == [2.0]


def test_stop_event_interrupts_a_long_rate_limit_wait() -> None:
    stop = threading.Event()
    fn = Flaky(hub_error(429, headers={"Retry-After": "3000"}))
    waited: list[float] = []

    def sleep(seconds: float) -> None:  # shutdown arrives while we wait
        waited.append(seconds)
        stop.set()

    with pytest.raises(RateLimitedError):
        call_with_retry(RetryPolicy(attempts=5), "commit", fn, sleep=sleep, stop=stop)
    assert fn.calls == 1 and waited == [3000.0]


def test_stop_event_with_real_sleep_returns_at_once() -> None:
    stop = threading.Event()
    stop.set()  # already set: the first attempt runs, no retry, no wait
    fn = Flaky(hub_error(429, headers={"Retry-After": "3000"}))
    with pytest.raises(RateLimitedError):
        call_with_retry(RetryPolicy(attempts=5), "commit", fn, stop=stop)
    assert fn.calls == 1


def test_retries_are_logged_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    register_secret(CANARY)
    fn = Flaky(hub_error(503, message=f"boom {CANARY}"))
    with caplog.at_level("WARNING", logger="uploader.retry"):
        call_with_retry(RetryPolicy.immediate(2), "commit alice/x", fn, sleep=lambda s: None)
    (record,) = caplog.records
    assert record.what == "commit alice/x"
    assert record.attempt == 1
    assert record.wait_s == 0.0
    assert record.error_class == "TransientError"
    assert CANARY not in record.getMessage()
