import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from uploader.errors import LockHeldError
from uploader.lock import StateLock, lock_holder

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0

# Takes the lock, says so, then holds it until stdin closes (or it is killed).
HOLDER = """
import sys
from uploader.lock import StateLock
lock = StateLock(sys.argv[1])
lock.acquire(wait=False)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(state_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(state_dir)], cwd=REPO_ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"  # blocks until it holds the lock
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        proc.stdin.close()
        proc.stdout.close()


def test_second_process_is_refused_with_the_holders_pid(tmp_path, holder):
    proc = holder(tmp_path)
    lock = StateLock(tmp_path)
    with pytest.raises(LockHeldError) as info:
        lock.acquire(wait=False)
    assert info.value.pid == proc.pid
    assert str(proc.pid) in info.value.message
    assert "--state-dir" in info.value.hint and str(proc.pid) in info.value.hint
    assert not lock.held
    assert lock_holder(tmp_path) == proc.pid


def test_wait_with_timeout_gives_up(tmp_path, holder):
    proc = holder(tmp_path)
    with pytest.raises(LockHeldError) as info:
        StateLock(tmp_path).acquire(wait=True, timeout=0.3, poll=0.05)
    assert info.value.pid == proc.pid


def test_wait_acquires_after_the_holder_exits(tmp_path, holder):
    proc = holder(tmp_path)
    lock = StateLock(tmp_path)
    done = threading.Event()
    errors: list[BaseException] = []

    def waiter():
        try:
            lock.acquire(wait=True, timeout=DEADLINE, poll=0.05)
        except BaseException as exc:
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not done.wait(0.3)  # still held: the waiter keeps waiting
    proc.stdin.close()  # the holder exits normally
    assert done.wait(DEADLINE)
    thread.join(DEADLINE)
    assert not errors
    assert lock.held and lock_holder(tmp_path) == os.getpid()
    lock.release()


def test_kill_9_releases_the_lock(tmp_path, holder):
    proc = holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=DEADLINE)
    assert lock_holder(tmp_path) is None
    with StateLock(tmp_path) as lock:
        assert lock.held


def test_lock_holder_none_when_free_or_absent(tmp_path):
    assert lock_holder(tmp_path / "never-created") is None
    lock = StateLock(tmp_path)
    lock.acquire(wait=False)
    lock.release()
    assert lock_holder(tmp_path) is None


def test_in_process_holder_is_not_dropped_by_queries(tmp_path):
    """Closing any descriptor of the file drops a POSIX lock: queries must not open it."""
    lock = StateLock(tmp_path)
    lock.acquire(wait=False)
    try:
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(LockHeldError):
            StateLock(tmp_path).acquire(wait=False)  # a second instance in the same process
        probe = subprocess.run(
            [sys.executable, "-c",
             "import sys; from uploader.lock import lock_holder; print(lock_holder(sys.argv[1]))",
             str(tmp_path)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=DEADLINE, check=True,
        )
        assert probe.stdout.strip() == str(os.getpid())
    finally:
        lock.release()
    assert lock_holder(tmp_path) is None


def test_pid_is_written_for_other_pid_namespaces(tmp_path):
    with StateLock(tmp_path) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
