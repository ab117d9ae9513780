"""The uploader gives way to training: nice and I/O priority for every thread (issue 15).

Each case runs in a child process, so the test process keeps its own priority."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, os, sys, threading
from uploader.priority import CpuScheduler, IoPriority, io_priority_of, lower_priority
ready, done = threading.Event(), threading.Event()
def idle():
    ready.set(); done.wait()
before = threading.Thread(target=idle, daemon=True); before.start(); ready.wait()
applied = lower_priority(int(sys.argv[1]), IoPriority(sys.argv[2]), CpuScheduler(sys.argv[3]))
late = {}
def later():
    late["nice"] = os.getpriority(os.PRIO_PROCESS, 0); late["io"] = io_priority_of(0)
    late["policy"] = os.sched_getscheduler(0)
after = threading.Thread(target=later); after.start(); after.join()
nice, io, policy = {}, {}, {}
for t in (int(t) for t in os.listdir("/proc/self/task")):
    try:  # the `later` thread may still be listed for a moment after it ended
        nice[t], io[t] = os.getpriority(os.PRIO_PROCESS, t), io_priority_of(t)
        policy[t] = os.sched_getscheduler(t)
    except ProcessLookupError:
        pass
print(json.dumps({"applied": [applied.nice, applied.io, applied.threads, applied.cpu],
                  "nice": nice, "io": io, "policy": policy, "late": late}))
done.set()
"""
BE_LOWEST = (2 << 13) | 7
IDLE = 3 << 13


def child(nice: int, io: str, prefix: tuple[str, ...] = (), cpu: str = "normal") -> dict:
    done = subprocess.run([*prefix, sys.executable, "-c", CHILD, str(nice), io, cpu], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_thread_and_every_later_one_runs_at_the_lower_priority() -> None:
    seen = child(10, "low")
    assert seen["applied"][:2] == [10, "best-effort/7"] and seen["applied"][2] >= 2
    assert set(seen["nice"].values()) == {10}, seen["nice"]
    assert set(seen["io"].values()) == {BE_LOWEST}, seen["io"]
    assert seen["late"] == {"nice": 10, "io": BE_LOWEST, "policy": os.sched_getscheduler(0)}


def test_sched_idle_for_every_thread_and_every_later_one() -> None:
    seen = child(10, "low", cpu="idle")
    assert seen["applied"][3] == "idle"
    assert set(seen["policy"].values()) == {os.SCHED_IDLE}, seen["policy"]
    assert seen["late"]["policy"] == os.SCHED_IDLE and seen["late"]["nice"] == 10


def test_normal_cpu_scheduler_leaves_the_policy() -> None:
    seen = child(10, "low", cpu="normal")
    assert seen["applied"][3] is None
    assert set(seen["policy"].values()) == {os.sched_getscheduler(0)}, seen["policy"]


def test_the_default_is_the_normal_policy() -> None:
    from uploader.priority import CpuScheduler
    from uploader.settings import UploaderSettings

    assert UploaderSettings.model_fields["cpu_scheduler"].default is CpuScheduler.NORMAL


def test_idle_io_class_and_normal_leaves_io_alone() -> None:
    assert set(child(5, "idle")["io"].values()) == {IDLE}
    normal = child(0, "normal")
    assert normal["applied"][:2] == [None, None]
    assert set(normal["nice"].values()) == {psutil.Process().nice()}


def test_a_lower_priority_already_set_is_never_raised() -> None:
    started_at = min(19, psutil.Process().nice() + 15)  # `nice -n` adds to our own
    seen = child(10, "low", prefix=("nice", "-n", "15"))
    assert set(seen["nice"].values()) == {started_at}, seen["nice"]


@pytest.mark.parametrize("value", ["-1", "20"])
def test_niceness_outside_linux_range_is_one_line_naming_the_setting(value: str) -> None:
    from pydantic import ValidationError

    from uploader.settings import UploaderSettings

    with pytest.raises(ValidationError, match="between 0 and 19"):
        UploaderSettings(nice=int(value))
