"""Wait on a condition with a deadline: the only synchronisation tests may use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from devhub.testing import wait_until

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """`devhub.testing.wait_until`, failing the test with what it was waiting for."""
    try:
        return wait_until(condition, timeout, interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None
