"""One writer per state dir, released by the kernel when the writer dies (even by kill -9).

Why POSIX record locks (`fcntl.lockf`, queried with F_GETLK) rather than `flock` + a pid file:

* `lock_holder` must report the holder without taking the lock. With `flock` the only probe is
  a non-blocking shared lock, and while a health check holds that probe for a moment a starting
  uploader's exclusive attempt fails; F_GETLK asks the kernel and takes nothing.
* The kernel reports the holder's pid itself, so a stale pid file can never name the wrong
  process.
* Record locks are not inherited across fork, so a forked helper cannot keep the state dir
  locked after the uploader died.

Their trap: closing ANY descriptor of the lock file in the holding process drops the lock, and
two acquisitions in one process do not conflict. Both are handled here: one descriptor stays
open for the lifetime of the lock, and a process-wide registry (guarded by a thread lock) makes
this module the only code that opens the file, never opening it while this process holds it.

The holder also writes its pid into the file: F_GETLK reports pid 0 when the holder lives in
another pid namespace (a sidecar container), and the file is then the best answer available.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
from pathlib import Path
from types import TracebackType

from uploader.errors import LockHeldError

logger = logging.getLogger(__name__)

LOCK_FILENAME = "uploader.lock"
DEFAULT_POLL_SECONDS = 0.2
_RACE_RETRIES = 3  # attempts when the holder releases between our try and our query

# struct flock on Linux (x86_64 and aarch64): short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, padded to 32 bytes.
_FLOCK_FORMAT = "hhqqi4x"

_registry_lock = threading.Lock()
_held: dict[str, int] = {}  # real path of a lock file -> the descriptor this process holds it by


def lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / LOCK_FILENAME


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _query_holder(fd: int) -> int | None:
    """The pid holding a conflicting lock on `fd`'s file, 0 if not visible here, None if free."""
    request = struct.pack(_FLOCK_FORMAT, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    reply = fcntl.fcntl(fd, fcntl.F_GETLK, request)
    l_type, _whence, _start, _len, l_pid = struct.unpack(_FLOCK_FORMAT, reply)
    if l_type == fcntl.F_UNLCK:
        return None
    if l_pid > 0:
        return l_pid
    return _pid_from_file(fd) or 0


def _pid_from_file(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class StateLock:
    """An exclusive lock on `<state_dir>/uploader.lock`; use as a context manager."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = lock_path(self.state_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(
        self, *, wait: bool, timeout: float | None = None, poll: float = DEFAULT_POLL_SECONDS
    ) -> None:
        """Take the lock; LockHeldError when another holds it and we may not wait (longer)."""
        if self._fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        logged_wait = False
        while True:
            holder = self._try_once()
            if holder is None:
                logger.debug("state lock acquired", extra={"lock_path": str(self.path)})
                return
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise self._held_error(holder)
            if not logged_wait:
                logger.info(
                    "waiting for the state lock held by pid %s", holder,
                    extra={"lock_path": str(self.path), "holder_pid": holder},
                )
                logged_wait = True
            remaining = poll if deadline is None else min(poll, deadline - time.monotonic())
            time.sleep(max(remaining, 0.0))

    def _try_once(self) -> int | None:
        """One attempt: None when acquired, else the holder's pid (0 when unknown)."""
        with _registry_lock:
            key = _key(self.path)
            if key in _held:
                return os.getpid()
            for _ in range(_RACE_RETRIES):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    try:
                        if exc.errno not in (errno.EACCES, errno.EAGAIN):
                            raise
                        holder = _query_holder(fd)
                    finally:
                        # Safe: the registry says this process holds no lock on the file.
                        os.close(fd)
                    if holder is not None:
                        return holder
                    continue  # the holder let go between our attempt and the query
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                _held[key] = fd
                self._fd = fd
                return None
            return 0

    def _held_error(self, pid: int) -> LockHeldError:
        who = f"pid {pid}" if pid else "a process in another pid namespace"
        return LockHeldError(
            f"another uploader ({who}) holds the state dir {self.state_dir}",
            pid=pid or None,
            hint=f"stop the other uploader ({who}) or use another --state-dir",
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with _registry_lock:
            fd, self._fd = self._fd, None
            _held.pop(_key(self.path), None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the record lock

    def __enter__(self) -> StateLock:
        self.acquire(wait=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_holder(state_dir: Path) -> int | None:
    """The pid holding the state dir's lock, None when free; never takes the lock.

    0 means held by a process whose pid is not visible from here and that left no pid behind.
    """
    path = lock_path(state_dir)
    with _registry_lock:
        if _key(path) in _held:
            # Opening and closing the file here would drop our own lock.
            return os.getpid()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _query_holder(fd)
        finally:
            os.close(fd)
