"""What the choice of transfer means for a user: auth failures, the fallback, where hf_xet writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import TOKEN, Mode, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import run_uploader, uploader_env

pytestmark = pytest.mark.e2e
STEPS = (50, 100)
# The fix the line must name: the same whichever service refused.
FIX = {401: ("set HF_TOKEN or HF_TOKEN_FILE",), 403: ("HF_TOKEN", "HUB_NAMESPACE")}


def write_run(out: Path) -> None:
    info = start_run(out, base_model="tiny", resume=False)
    for step in STEPS:
        write_checkpoint(out, step, run_id=info.run_id, adapter_bytes=1024 * 1024)
    finish_run(out, Outcome.COMPLETED)


def backfill(hub, out: Path, *extra: str, **env: str):
    return run_uploader(["backfill", "--output-dir", str(out), "--log-format", "json", *extra],
                        uploader_env(hub.url, TOKEN, **env))


def errors_of(result) -> list[str]:
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [line["error"] for line in lines if line.get("message") == "not uploaded"]


@pytest.mark.parametrize(("where", "status", "path"), [
    ("hub-api", 401, "/preupload/"),
    ("hub-api", 403, "/preupload/"),
    ("xet-token-route", 401, "/xet-write-token/"),
    ("xet-token-route", 403, "/xet-write-token/"),
    ("xet-storage", 401, "/v1/xorbs/"),
    ("xet-storage", 403, "/v1/xorbs/"),
])
def test_auth_refusal_anywhere_is_one_attempt_and_the_same_line(hub, tmp_path, where, status,
                                                                path):
    out = tmp_path / "out"
    write_run(out)
    message = "Invalid credentials" if status == 401 else "You don't have the rights"
    hub.add_faults({"action": "status", "status": status, "path": path, "message": message})
    result = backfill(hub, out)
    assert result.returncode == 1, result.stderr
    errors = errors_of(result)
    assert len(errors) == len(STEPS), result.stderr
    for error in errors:
        assert f"(HTTP {status}" in error and all(fix in error for fix in FIX[status]), error
        assert "\n" not in error
    # Not retried like a network failure: at most one refused request per checkpoint.
    refused = [e for e in hub.log() if path in e["path"] and e["status"] == status]
    assert 1 <= len(refused) <= len(STEPS), [e["path"] for e in refused]


def test_forcing_xet_on_a_server_without_it_names_the_fix(tmp_path):
    from devhub.testing import DevHub
    from tests.e2e.conftest import USER

    out = tmp_path / "out"
    write_run(out)
    with DevHub(tmp_path / "hub", users={USER: TOKEN}, xet=False) as hub:
        result = backfill(hub, out, "--transfer", "xet")
        assert result.returncode == 1
        errors = errors_of(result)
        assert errors and all("no Xet storage" in e and "--transfer auto" in e for e in errors)


@pytest.mark.parametrize("transfer_mode", [Mode.FALLBACK], indirect=True)
def test_fallback_is_said_once_per_process(hub, api, tmp_path, transfer_mode):
    out = tmp_path / "out"
    write_run(out)
    result = backfill(hub, out, "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "has no Xet storage" in line]
    assert len(said) == 1, said
    assert len(repos(api)) == len(STEPS)


def test_hf_xet_writes_its_cache_under_the_state_dir(hub, api, tmp_path):
    out, home = tmp_path / "out", tmp_path / "hf-home"
    write_run(out)
    result = backfill(hub, out, HF_HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert (out / ".uploader" / "xet").is_dir()
    assert not (home / "xet").exists(), "hf_xet wrote into HF_HOME (a container's writable layer)"
