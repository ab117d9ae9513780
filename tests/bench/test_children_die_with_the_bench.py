"""An interrupted bench takes the children it started through LoggedProcess with it (the
training bench's busy loop, uploaders): none outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from devhub.testing import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

# A stand-in for a bench run: it starts the training bench's busy loop through LoggedProcess,
# prints the child's pid, then waits to be killed.
PARENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bench.common import LoggedProcess
    from bench.training_overhead import LOAD_COMMAND
    child = LoggedProcess(LOAD_COMMAND, {}, Path(sys.argv[1]))
    print(child.pid, flush=True)
    time.sleep(600)
""")


def test_a_killed_bench_leaves_no_busy_loop_behind(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "load.log")],
                              stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        assert child.is_running()
        parent.send_signal(signal.SIGKILL)  # as `pkill -9` would; no handler of ours runs
        parent.wait(10)

        def gone() -> bool:
            try:
                return not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(gone, timeout=10)
    finally:
        parent.kill()
        parent.wait()
        if child.is_running():
            child.kill()
