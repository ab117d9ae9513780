"""The HTTP client huggingface_hub uses in this process: timeouts, and one retry policy.

huggingface_hub shares one httpx2 client per process (`set_client_factory`) and creates it
without timeouts, so a stalled server would hang an upload forever: the factory here sets
connect/read/write timeouts. Its `http_backoff` also retries inside each of our calls (5 times
on preupload, the LFS batch and transfers, and the Xet token route) and sleeps an announced
`Retry-After` of any length, uncapped and deaf to a stop. For the Hub endpoints the uploader
talks to, a response hook hands every rate limit, and every other retryable answer that
announces a wait, straight to the uploader's own policy (`uploader.retry`): there it is waited
out interruptibly, capped by `--max-rate-limit-wait`, or ends the attempt as rate-limited.
Short unannounced 5xx retries stay with the library (at most seconds each) until a stop is
requested (SIGTERM): from then on every retryable answer ends the attempt at once, so the drain
never waits out the library's remaining retries.
"""

from __future__ import annotations

import threading

import httpx2
from huggingface_hub import set_client_factory

from uploader.hfcompat import request_event_hook

# Retryable answers whose wait the uploader decides (the set http_backoff retries).
_WAIT_STATUSES = frozenset({429, 500, 502, 503, 504})


class _ClientSettings:
    """What the factory builds with; one per process, like the client it configures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.timeouts: tuple[float, float] | None = None
        self.hosts: set[str] = set()
        self.stops: list[threading.Event] = []  # the clients' stop events (SIGTERM)

    def stopping(self) -> bool:
        return any(stop.is_set() for stop in self.stops)


_SETTINGS = _ClientSettings()


def install_http_client(connect_timeout: float, read_timeout: float, host: str,
                        stop: threading.Event | None = None) -> None:
    """Timeouts for every request, and rate limits from `host` to our policy (idempotent);
    once `stop` is set, no retryable answer from `host` is retried by the library."""
    with _SETTINGS.lock:
        _SETTINGS.hosts.add(host)
        if stop is not None and not any(stop is known for known in _SETTINGS.stops):
            _SETTINGS.stops.append(stop)
        wanted = (connect_timeout, read_timeout)
        if _SETTINGS.timeouts == wanted:
            return

        def factory() -> httpx2.Client:
            # Mirrors huggingface_hub's default factory, plus the timeouts and the hook.
            return httpx2.Client(
                event_hooks={"request": [request_event_hook], "response": [_announced_waits]},
                follow_redirects=True,
                timeout=httpx2.Timeout(read_timeout, connect=connect_timeout),
            )

        set_client_factory(factory)
        _SETTINGS.timeouts = wanted


def _announced_waits(response: httpx2.Response) -> None:
    """Raise the classified error for a rate limit (or an announced wait) from our hosts."""
    if response.status_code not in _WAIT_STATUSES or response.request.url.host not in \
            _SETTINGS.hosts:
        return
    from uploader.retry import announced_wait, classify

    if response.status_code != 429 and not announced_wait(response) and \
            not _SETTINGS.stopping():
        return
    response.read()  # the error then carries the server's own words
    request = response.request
    error = httpx2.HTTPStatusError(f"HTTP {response.status_code} for {request.url.path}",
                                   request=request, response=response)
    raise classify(error, f"{request.method} {request.url.path}")
