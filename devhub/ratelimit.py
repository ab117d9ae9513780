"""Rate-limit mode: N commits or repo creations per window per user, answered as the Hub does.

    python -m devhub ... --rate-limit commits=4/6,repos=10/60

Each limited kind keeps one fixed window per user: the first admitted request opens a window of
`window` seconds, `limit` requests pass in it, the next ones get 429 until it ends. The answer
names the real time left in that window, rounded up to whole seconds, in `Retry-After` and in
`RateLimit: "<kind>";r=0;t=<seconds>` (huggingface_hub parses both), so a client that waits
exactly as long as told finds a fresh window. Rejected requests do not count.

The same windows back the `ratelimit` fault action (see `devhub.faults`), which limits whatever
a rule matches and can be added and cleared at run time through the admin API.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .wire import HubError

log = logging.getLogger(__name__)

TOO_MANY_REQUESTS = 429


class Kind(enum.StrEnum):
    COMMITS = "commits"
    REPOS = "repos"


# What each kind limits: the commit POST and repo creation (create_repo(exist_ok=True) counts
# too, as on the Hub). Preupload, LFS and reads are never limited by this mode.
_MATCHERS: dict[Kind, tuple[str, re.Pattern[str]]] = {
    Kind.COMMITS: ("POST", re.compile(r"^/api/(?:models|datasets|spaces)/[^/]+/[^/]+/commit/")),
    Kind.REPOS: ("POST", re.compile(r"^/api/repos/create$")),
}
_DESCRIPTIONS = {Kind.COMMITS: "repository commits", Kind.REPOS: "repository creations"}
_SPEC_ITEM = re.compile(r"^(?P<kind>\w+)=(?P<limit>\d+)/(?P<window>\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Quota:
    limit: int  # requests admitted per window
    window: float  # seconds

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and window > 0, got {self}")


def parse_rate_limit(spec: str) -> dict[Kind, Quota]:
    """`commits=4/6,repos=10/60` -> {Kind.COMMITS: Quota(4, 6.0), Kind.REPOS: Quota(10, 60.0)}."""
    quotas: dict[Kind, Quota] = {}
    for item in (part.strip() for part in spec.split(",")):
        match = _SPEC_ITEM.match(item)
        if match is None:
            raise ValueError(f"--rate-limit expects KIND=N/SECONDS[,...], got {item!r}")
        try:
            kind = Kind(match["kind"])
        except ValueError:
            known = ", ".join(k.value for k in Kind)
            raise ValueError(f"unknown rate-limit kind {match['kind']!r} (known: {known})") from None
        if kind in quotas:
            raise ValueError(f"rate-limit kind {kind} given twice")
        quotas[kind] = Quota(int(match["limit"]), float(match["window"]))
    return quotas


class FixedWindows:
    """One fixed window per key (a user name); thread-safe."""

    def __init__(self, quota: Quota, clock: Callable[[], float] = time.monotonic) -> None:
        self.quota = quota
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, admitted)

    def admit(self, key: str) -> float | None:
        """None when the request is admitted (and counted); else seconds until the window ends."""
        now = self._clock()
        with self._lock:
            start, admitted = self._windows.get(key, (now, 0))
            if now >= start + self.quota.window:
                start, admitted = now, 0
            if admitted < self.quota.limit:
                self._windows[key] = (start, admitted + 1)
                return None
            return start + self.quota.window - now

    def reset_in(self, key: str) -> float:
        """Seconds until the key's current window ends (0 when it has none or it ended)."""
        now = self._clock()
        with self._lock:
            start, _ = self._windows.get(key, (now, 0))
            return max(0.0, start + self.quota.window - now)


def too_many_requests(resource: str, description: str, quota: Quota, reset_in: float) -> HubError:
    """The Hub's 429: a message with the limit and the wait, and both wait headers."""
    seconds = max(1, math.ceil(reset_in))  # never early: after this wait the window has ended
    message = (f"You have exceeded the rate limit for {description} ({quota.limit} per "
               f"{quota.window:g} seconds). Please retry in {seconds} seconds.")
    headers = {
        "Retry-After": str(seconds),
        "RateLimit": f'"{resource}";r=0;t={seconds}',
        "RateLimit-Policy": f'"fixed window";"{resource}";q={quota.limit};w={math.ceil(quota.window)}',
    }
    return HubError(TOO_MANY_REQUESTS, message, headers=headers)


class RateLimiter:
    """The `--rate-limit` mode: per-user windows for each configured kind."""

    def __init__(self, quotas: Mapping[Kind, Quota],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quotas = dict(quotas)
        self._windows = {kind: FixedWindows(quota, clock) for kind, quota in quotas.items()}

    def check(self, method: str, path: str, user: str | None) -> None:
        """Count the request; HubError 429 when its user is over a limit.

        Anonymous requests are not limited here: the route answers them 401 anyway.
        """
        if user is None:
            return
        for kind, windows in self._windows.items():
            wanted_method, pattern = _MATCHERS[kind]
            if method != wanted_method or pattern.search(path) is None:
                continue
            reset_in = windows.admit(user)
            if reset_in is not None:
                log.info("rate limit %s reached for %s: %s %s (window ends in %.2fs)", kind, user,
                         method, path, reset_in)
                raise too_many_requests(kind.value, _DESCRIPTIONS[kind], windows.quota, reset_in)
