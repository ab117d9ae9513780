"""`DevHub`: run `python -m devhub` as a subprocess for tests, benchmarks and the demo.

    with DevHub(tmp_path / "hub", users={"alice": "hf_alice"}) as hub:
        HfApi(endpoint=hub.url, token=hub.token("alice")).whoami()
        hub.add_faults({"action": "status", "status": 503, "path": "^/api/whoami-v2$", "times": 1})
        hub.restart()          # same data dir, same port when it is free

Stdlib only, pytest-agnostic. The process never outlives its DevHub object: `stop()`, the
context manager, garbage collection and interpreter exit all end it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

STARTUP_LINE = "devhub listening on "
DEFAULT_ADMIN_TOKEN = "devhub-admin-token"
STOP_TIMEOUT_S = 10.0
TRANSFERS = ("xet", "lfs")  # how a client moves file contents: through hf_xet, or plain LFS
T = TypeVar("T")


class DevHubError(RuntimeError):
    """devhub did not start, or an admin call failed."""


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class DevHub:
    """A devhub server process on 127.0.0.1.

    Args:
        data_dir: where repos, objects and logs live; reused by `restart()`.
        users: user name -> write token.
        read_tokens: user name -> read-only token (the user may also have a write token).
        orgs: org name -> member names.
        admin_token: bearer token of the admin API (faults, request log).
        faults: rules loaded at start through `--faults` (see `devhub.faults`).
        seed: seed of the probabilistic faults.
        port: 0 picks a free port; `restart()` then tries to keep the one it got.
        multipart_chunk_size: LFS objects above it are uploaded multipart (devhub's default if None).
        rate_limit: the `--rate-limit` spec, e.g. "commits=4/6,repos=4/6" (`devhub.ratelimit`).
        xet: serve Xet (the default, as the Hub does); False passes `--no-xet` (LFS only).
        xet_token_ttl: lifetime in seconds of the Xet tokens (devhub's default if None).
        fullnames: user or org name -> full name (whoami's `fullname`; the name itself if unset).
        startup_timeout: seconds to wait for the start-up line.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        users: Mapping[str, str] | None = None,
        *,
        read_tokens: Mapping[str, str] | None = None,
        orgs: Mapping[str, Iterable[str]] | None = None,
        admin_token: str = DEFAULT_ADMIN_TOKEN,
        faults: list[dict[str, Any]] | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        multipart_chunk_size: int | None = None,
        rate_limit: str | None = None,
        xet: bool = True,
        xet_token_ttl: int | None = None,
        fullnames: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.users = dict(users if users is not None else {"alice": "hf_alice_token"})
        self.read_tokens = dict(read_tokens or {})
        self.orgs = {org: list(members) for org, members in (orgs or {}).items()}
        self.admin_token = admin_token
        self.initial_faults = faults
        self.seed = seed
        self.host = host
        self.port = port
        self.multipart_chunk_size = multipart_chunk_size
        self.rate_limit = rate_limit
        self.xet = xet
        self.xet_token_ttl = xet_token_ttl
        self.fullnames = dict(fullnames or {})
        self.startup_timeout = startup_timeout
        self._url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` of the running server."""
        if self._url is None:
            raise DevHubError("devhub has not been started")
        return self._url

    # ---- life cycle --------------------------------------------------------------------

    def _command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "devhub", "--host", self.host, "--port", str(port)]
        cmd += ["--data-dir", str(self.data_dir), "--admin-token", self.admin_token]
        cmd += ["--seed", str(self.seed)]
        cmd += [arg for name, tok in self.users.items() for arg in ("--user", f"{name}:{tok}")]
        cmd += [
            a for name, tok in self.read_tokens.items() for a in ("--user", f"{name}:{tok}:read")
        ]
        cmd += [
            a for org, members in self.orgs.items() for a in ("--org", f"{org}:{','.join(members)}")
        ]
        if self.multipart_chunk_size is not None:
            cmd += ["--multipart-chunk-size", str(self.multipart_chunk_size)]
        if self.rate_limit is not None:
            cmd += ["--rate-limit", self.rate_limit]
        if not self.xet:
            cmd += ["--no-xet"]
        if self.xet_token_ttl is not None:
            cmd += ["--xet-token-ttl", str(self.xet_token_ttl)]
        cmd += [
            a for name, full in self.fullnames.items() for a in ("--fullname", f"{name}={full}")
        ]
        if self.initial_faults is not None:
            path = self.data_dir / "faults-at-start.json"
            path.write_text(json.dumps(self.initial_faults))
            cmd += ["--faults", str(path)]
        return cmd

    def start(self) -> DevHub:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._spawn(self.port)
        except DevHubError:
            if self.port == 0:
                raise
            self._spawn(0)  # the old port was taken meanwhile
        return self

    def _spawn(self, port: int) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        stderr_path = self.data_dir / "devhub.stderr"
        with open(stderr_path, "ab") as stderr:
            proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self._finalizer = weakref.finalize(self, _terminate, proc)
        line = self._first_line(proc)
        if line is None or not line.startswith(STARTUP_LINE):
            _terminate(proc)
            tail = stderr_path.read_text(errors="replace")[-2000:]
            raise DevHubError(f"devhub did not start (first line {line!r}); stderr:\n{tail}")
        self._url = line[len(STARTUP_LINE) :].strip()
        self.port = int(self._url.rsplit(":", 1)[1])
        self._proc = proc
        threading.Thread(target=self._drain, args=(proc,), daemon=True).start()

    def _first_line(self, proc: subprocess.Popen[bytes]) -> str | None:
        lines: queue.Queue[bytes] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            return lines.get(timeout=self.startup_timeout).decode(errors="replace") or None
        except queue.Empty:
            return None

    @staticmethod
    def _drain(proc: subprocess.Popen[bytes]) -> None:
        """Read and drop stdout so the server never blocks on a full pipe."""
        assert proc.stdout is not None
        while proc.stdout.read(65536):
            pass

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DevHubError("devhub is not running")
        return self._proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._finalizer is not None:
            self._finalizer.detach()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc)
        if self._finalizer is not None:
            self._finalizer.detach()

    def restart(self) -> DevHub:
        """Stop and start again on the same data dir (and the same port when possible)."""
        self.stop()
        self.initial_faults = None  # runtime state is gone; the repos on disk stay
        return self.start()

    def __enter__(self) -> DevHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for clients -------------------------------------------------------------

    def token(self, user: str) -> str:
        return self.users[user]

    def env(self, user: str | None = None, *, transfer: str = "xet") -> dict[str, str]:
        """Environment for a client subprocess (`hf` CLI, uploader) talking to this devhub.

        `transfer` "xet" (the default, as against the Hub) uploads through hf_xet; the variable
        is then set to "0" so an inherited "1" cannot switch it off. "lfs" asks for plain LFS.
        """
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {TRANSFERS}, not {transfer!r}")
        env = {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_XET": "1" if transfer == "lfs" else "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",  # else the `hf` CLI asks pypi.org for a newer version
        }
        if user is not None:
            env["HF_TOKEN"] = self.token(user)
        return env

    # ---- admin API -----------------------------------------------------------------------

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            raise DevHubError(
                f"{method} {path}: {err.code} {err.read().decode(errors='replace')}"
            ) from err

    def add_faults(self, rules: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add one rule or a list; returns them with their ids. Damage without `path` acts now."""
        return self._admin("POST", "/_devhub/faults", rules)

    def clear_faults(self) -> None:
        self._admin("DELETE", "/_devhub/faults")

    def faults(self) -> list[dict[str, Any]]:
        """Live rules with their `matches` and `hits` counters."""
        return self._admin("GET", "/_devhub/faults")

    def log(self) -> list[dict[str, Any]]:
        """Recent requests: method, path, status, bytes, bytes_in, duration, user, fault."""
        return self._admin("GET", "/_devhub/log")
