"""The uploader as a real process, the way compose and the demo run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path
from typing import ClassVar

from tests.support.waiting import wait_for

FAST_SETTINGS = {
    # CI-sized timings: every wait in the uploader shrinks, none of its logic changes. The
    # transfer is left at its default (auto), as a new user has it.
    "UPLOADER_SETTLE_SECONDS": "0.5",
    "UPLOADER_SCAN_INTERVAL": "2",
    "UPLOADER_ROUND_BACKOFF": "0.5",
    "UPLOADER_ROUND_BACKOFF_MAX": "2",
    "UPLOADER_RETRY_MAX_WAIT": "0.5",
    "UPLOADER_READ_TIMEOUT": "10",
    "UPLOADER_CONNECT_TIMEOUT": "5",
    "UPLOADER_RUN_END_GRACE": "5",
}


# What the transfer mode under test adds to every uploader's environment (tests/e2e's
# `transfer_mode` fixture patches it for one test, e.g. the user's HF_HUB_DISABLE_XET=1).
TRANSFER_ENV: dict[str, str] = {}


def uploader_env(endpoint: str, token: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UPLOADER_", "HF_", "HUB_", "WANDB_"))}
    # The test session's own HF_HOME (tests/conftest.py): never the developer's saved login.
    if "HF_HOME" in os.environ:
        env["HF_HOME"] = os.environ["HF_HOME"]
    env |= {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env |= FAST_SETTINGS | TRANSFER_ENV
    if token is not None:
        env["HF_TOKEN"] = token
    env |= extra
    return env


class UploaderProcess:
    """`python -m uploader <args>` with its output in a log file.

    Every started process is remembered in `started`, so a fixture can kill what a failing
    test left running (`kill_leftovers`).
    """

    started: ClassVar[weakref.WeakSet[UploaderProcess]] = weakref.WeakSet()

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> UploaderProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "uploader", *self.args],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        UploaderProcess.started.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.running():
            self.terminate()
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def wait_output(self, text: str, timeout: float) -> None:
        wait_for(lambda: text in self.output(), timeout, f"{text!r} in uploader output")


def run_uploader(args: list[str], env: dict[str, str], timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def kill_leftovers() -> None:
    for proc in list(UploaderProcess.started):
        if proc.running():
            proc.kill9()
