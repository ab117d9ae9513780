"""The uploader gives way to training: lower CPU and I/O priority for the whole process.

CPU: nice 10 by default; `--cpu-scheduler idle` adds Linux's SCHED_IDLE, under which a thread
never preempts a normal one and runs only on CPU time nobody else wants. Not the default: in
the training bench it moved (d) from 1.105x to 1.090x of no uploads, within the noise, while
with every core busy it held the uploads back until training ended (drain 43 s against 13 s),
and a checkpoint that waits on local disk is one a preemption can still take.

Linux keeps all of these per thread, and a new thread inherits its creator's, so `lower_priority` runs
first thing in `watch`/`backfill` (before hf_xet, watchdog or W&B start threads) and applies to
every thread already there. Lowering needs no privilege; a priority already lower (a user's own
`nice -n 19`) is never raised. I/O priority takes effect where the kernel's I/O scheduler honours
it (BFQ; cgroup v2 `io.weight` governs containers too); elsewhere it is a harmless no-op.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# ioprio_set(2) has no libc wrapper: the syscall number per architecture.
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "arm64": 30}
_SYS_IOPRIO_GET = {"x86_64": 252, "aarch64": 31, "arm64": 31}
_IOPRIO_WHO_PROCESS = 1  # with a thread id: that thread
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_CLASS_BE = 2
_IOPRIO_CLASS_IDLE = 3
_BE_LOWEST = 7


class CpuScheduler(enum.StrEnum):
    IDLE = "idle"  # SCHED_IDLE: only CPU time nobody else wants
    NORMAL = "normal"  # leave the policy as inherited (niceness still applies)


class IoPriority(enum.StrEnum):
    LOW = "low"  # best-effort, its lowest level: served after the trainer, never starved
    IDLE = "idle"  # only when nobody else wants the disk: may stall behind a busy dataloader
    NORMAL = "normal"  # leave as inherited


@dataclass(frozen=True)
class Applied:
    nice: int | None  # the niceness now in effect, None when unchanged
    io: str | None  # "best-effort/7", "idle", or None when unchanged or unsupported
    threads: int
    cpu: str | None = None  # "idle" (SCHED_IDLE), or None when unchanged or unsupported


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir(Path("/proc/self/task"))]
    except OSError:
        return [0]  # not Linux: the calling thread only


def _ioprio_value(io: IoPriority) -> int | None:
    if io is IoPriority.LOW:
        return (_IOPRIO_CLASS_BE << _IOPRIO_CLASS_SHIFT) | _BE_LOWEST
    if io is IoPriority.IDLE:
        return _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT
    return None


def _syscall(table: dict[str, int], *args: int) -> int:
    number = table.get(platform.machine())
    if number is None:
        raise OSError("ioprio syscalls are not known on this architecture")
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.syscall(number, *args))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def io_priority_of(tid: int = 0) -> int:
    """The raw ioprio of a thread (0: the caller), for tests and `status`."""
    return _syscall(_SYS_IOPRIO_GET, _IOPRIO_WHO_PROCESS, tid)


def _sched_idle(threads: list[int]) -> str | None:
    """Every thread to SCHED_IDLE (allowed without privilege; never undone)."""
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        log.info("CPU scheduling left as it is: no SCHED_IDLE on this system")
        return None
    for tid in threads:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except ProcessLookupError:
            continue  # a thread that ended since /proc listed it
        except OSError as exc:  # e.g. a seccomp profile that refuses it
            log.info("CPU scheduling left as it is", extra={"error": str(exc)})
            return None
    return "idle"


def lower_priority(nice: int, io: IoPriority,
                   cpu: CpuScheduler = CpuScheduler.NORMAL) -> Applied:
    """Lower this process's CPU niceness to `nice` (0 leaves it), its I/O priority, and with
    `cpu=IDLE` its scheduling policy to SCHED_IDLE."""
    threads = _thread_ids()
    applied_cpu = _sched_idle(threads) if cpu is CpuScheduler.IDLE else None
    applied_nice: int | None = None
    if nice > 0:
        for tid in threads:
            try:
                current = os.getpriority(os.PRIO_PROCESS, tid)
                if current < nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError as exc:  # a thread that ended meanwhile, or no such API
                log.debug("cannot renice thread", extra={"tid": tid, "error": str(exc)})
        applied_nice = os.getpriority(os.PRIO_PROCESS, 0)
    applied_io: str | None = None
    value = _ioprio_value(io)
    if value is not None:
        try:
            for tid in threads:
                try:
                    current = io_priority_of(tid)
                    # Never raise: an idle-class thread stays idle under "low".
                    if current >> _IOPRIO_CLASS_SHIFT != _IOPRIO_CLASS_IDLE:
                        _syscall(_SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS, tid, value)
                except ProcessLookupError:
                    continue  # a thread that ended since /proc listed it
            applied_io = "idle" if io is IoPriority.IDLE else f"best-effort/{_BE_LOWEST}"
        except OSError as exc:
            log.info("I/O priority left as it is", extra={"error": str(exc)})
    return Applied(applied_nice, applied_io, len(threads), applied_cpu)


__all__ = ["Applied", "CpuScheduler", "IoPriority", "io_priority_of", "lower_priority"]
