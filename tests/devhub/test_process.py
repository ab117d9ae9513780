"""The devhub process: its start-up line, a quiet stdout, and DevHub never leaking it."""

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub, DevHubError, wait_until

from .conftest import USERS, make_hub


def test_startup_line_then_quiet_stdout(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "devhub",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "d"),
        "--user",
        "alice:tok",
        "--user",
        "carol:tok2:read",
        "--org",
        "acme:alice",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.fullmatch(r"devhub listening on http://127\.0\.0\.1:(\d+)\n", line)
        assert match and int(match.group(1)) > 0
        api = HfApi(endpoint=line.split()[-1], token="tok")
        api.create_repo("alice/quiet")
        assert api.whoami()["orgs"][0]["name"] == "acme"
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert out == b""
        assert proc.returncode == 0
        assert (tmp_path / "d" / "requests.jsonl").read_text().count("/api/repos/create") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_arguments_fail_fast(tmp_path: Path) -> None:
    hub = DevHub(tmp_path / "d", users={"alice": ""})  # an empty token is refused
    with pytest.raises(DevHubError, match="--user"):
        hub.start()
    assert not hub.running


def test_context_manager_and_garbage_collection_end_the_process(tmp_path: Path) -> None:
    with make_hub(tmp_path / "a") as hub:
        pid = hub.pid
        assert psutil.pid_exists(pid)
    assert not psutil.pid_exists(pid)

    dropped = make_hub(tmp_path / "b").start()
    pid = dropped.pid
    del dropped
    gc.collect()
    wait_until(lambda: not psutil.pid_exists(pid), timeout=10)


def test_restart_keeps_the_port_and_admin_api(tmp_path: Path) -> None:
    with make_hub(tmp_path / "hub") as hub:
        port = hub.port
        hub.add_faults({"action": "delay", "seconds": 0.01})
        hub.restart()
        assert hub.port == port
        assert hub.faults() == []  # fault rules are runtime state
        assert HfApi(endpoint=hub.url, token=USERS["alice"]).whoami()["name"] == "alice"
