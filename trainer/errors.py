"""Errors the user can fix: one line saying what is wrong, and a hint saying what to try.

The CLI prints them as `Error: ...` and `Try: ...` and exits 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the run's inputs or environment, not with the code."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class DatasetError(UserError):
    """The dataset cannot be found or parsed; the message names the file and the fix."""


class ResumeError(UserError):
    """Nothing to resume from, or no way to reach it."""
