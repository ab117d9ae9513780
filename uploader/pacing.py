"""Client-side pacing: at most N repo creations and N commits per window (an hour by default).

The Hub limits commits (a real 429: "128 per hour") and repo creations per account, and one
checkpoint is one repo plus one commit, so a fleet of sidecars under one account reaches those
limits together. Giving each sidecar a share (`--max-commits-per-hour`, `--max-repos-per-hour`)
keeps the fleet under them without any 429; the uploader's 429 handling (`uploader.retry`)
remains the backstop when the shares are set too high.

`Pacer` is a sliding-window log per operation: a slot is taken just before the request is sent
(every attempt, since the Hub counts every request it receives), and when the window is full the
caller waits until the oldest slot leaves it. The wait is interrupted by the stop event, so a
SIGTERM never waits out an hour. The log is kept in a small JSON file in the state dir, so a
restarted sidecar does not start with a fresh allowance.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from uploader.errors import TransientError
from uploader.retry import resume_time

log = logging.getLogger(__name__)

PACING_FILENAME = "pacing.json"
HOUR = 3600.0
# A slot is taken before the request leaves, and the Hub counts it when it arrives, in windows
# that need not line up with ours: keep each slot this much longer than the window.
ARRIVAL_MARGIN_S = 1.0
_FILE_VERSION = 1


class Operation(enum.StrEnum):
    CREATE_REPO = "create_repo"
    COMMIT = "commit"


@dataclass(frozen=True)
class PaceLimit:
    """`count` operations per `window` seconds; a count of 0 means no limit."""

    count: int
    window: float = HOUR

    def __post_init__(self) -> None:
        if self.count < 0 or self.window <= 0:
            raise ValueError(f"a pace limit needs count >= 0 and window > 0, got {self}")


class PacingInterrupted(TransientError):
    """The stop event was set while waiting for a slot: nothing was sent."""


class Pacer:
    """Sliding-window pacing of Hub writes; thread-safe, shared by a process's HubClient."""

    def __init__(
        self,
        limits: Mapping[Operation, PaceLimit],
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        margin: float = ARRIVAL_MARGIN_S,
    ) -> None:
        """`path`: where the recent slots are kept across restarts (None: memory only).
        `clock` is wall-clock time, because the saved slots must mean the same after a restart."""
        self.limits = {op: limit for op, limit in limits.items() if limit.count > 0}
        self.path = path
        self.margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[Operation, deque[float]] = {op: deque() for op in Operation}
        self.waits = 0  # times a caller had to wait for a slot
        self._load()

    @property
    def active(self) -> bool:
        return bool(self.limits)

    def acquire(self, operation: Operation, stop: threading.Event | None = None,
                what: str = "") -> None:
        """Take a slot for `operation`, waiting while its window is full.

        Raises PacingInterrupted when `stop` is set during the wait (no slot is taken).
        """
        limit = self.limits.get(operation)
        if limit is None:
            return
        logged = False
        while True:
            wait = self._try_take(operation, limit)
            if wait is None:
                return
            if not logged:  # once per call: the resume time does not move while we wait
                self._log_wait(operation, limit, wait, what)
                logged = True
            interrupted = stop.wait(wait) if stop is not None else _sleep(wait)
            if interrupted:
                raise PacingInterrupted(
                    f"{what or operation} not sent: stopping while waiting for a pacing slot",
                    "it is sent on the next start or by `backfill`")

    def _try_take(self, operation: Operation, limit: PaceLimit) -> float | None:
        """Take a slot now (None), or say how long until one frees up."""
        with self._lock:
            now = self._clock()
            span = limit.window + self.margin
            slots = self._slots[operation]
            while slots and slots[0] <= now - span:
                slots.popleft()
            if len(slots) < limit.count:
                slots.append(now)
                self._save()
                return None
            # Bounded by the span: a wall clock set back must not stretch the wait.
            return min(max(slots[0] + span - now, 0.0), span)

    def _log_wait(self, operation: Operation, limit: PaceLimit, wait: float, what: str) -> None:
        self.waits += 1
        resume_at = resume_time(wait)
        log.info(
            "pacing: %d %s per %.0fs reached; waiting %.0fs, resuming at %s", limit.count,
            operation, limit.window, wait, resume_at,
            extra={"operation": str(operation), "what": what, "limit": limit.count,
                   "window_s": limit.window, "wait_s": round(wait, 3), "resume_at": resume_at})

    # -- persistence -------------------------------------------------------------------------

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text())
            slots = raw["slots"] if raw.get("version") == _FILE_VERSION else {}
            for name, times in slots.items():
                self._slots[Operation(name)] = deque(sorted(float(t) for t in times))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Losing the log only means a fresh allowance, as before this feature existed.
            log.warning("pacing log unreadable; starting with an empty one",
                        extra={"path": str(self.path), "error": str(exc)})

    def _save(self) -> None:
        """Write the slots still inside a window (called with the lock held)."""
        if self.path is None:
            return
        payload = {"version": _FILE_VERSION,
                   "slots": {op.value: list(times) for op, times in self._slots.items() if times}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, self.path)
        except OSError as exc:  # pacing still works in memory; only the restart loses it
            log.warning("cannot save the pacing log", extra={"path": str(self.path),
                                                             "error": str(exc)})


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def pacer_from_limits(commits_per_hour: int, repos_per_hour: int,
                      path: Path | None = None) -> Pacer | None:
    """The pacer the settings ask for; None when neither cap is set."""
    pacer = Pacer({Operation.COMMIT: PaceLimit(commits_per_hour),
                   Operation.CREATE_REPO: PaceLimit(repos_per_hour)}, path)
    return pacer if pacer.active else None
