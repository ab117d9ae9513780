"""When nothing but refused credentials stands between a finished run and the exit.

A token revoked mid-run makes every round fail with 401/403. `watch` keeps waiting for a rotated
secret (each round logs the refusal at error level), but with `--exit-when-done` a container must
not wait forever once the trainer is gone: when every unfinished checkpoint has failed on auth
alone for `grace` seconds, the watcher ends with that error (exit 1). Local files stay.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from uploader.errors import AuthError
from uploader.pipeline import pending_work
from uploader.state import Record

AUTH_ERROR_CLASS = AuthError.__name__


class AuthFailures:
    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._since: float | None = None

    def check(self, records: list[Record]) -> AuthError | None:
        """The error to end with once only auth failures have remained for `grace` seconds."""
        unfinished = pending_work(records)
        refused = [r for r in unfinished if r.error_class == AUTH_ERROR_CLASS]
        if not unfinished or len(refused) != len(unfinished):
            self._since = None
            return None
        now = self.clock()
        if self._since is None:
            self._since = now
        if now - self._since < self.grace:
            return None
        return AuthError(f"{len(refused)} checkpoint(s) not uploaded: {refused[0].last_error}")
