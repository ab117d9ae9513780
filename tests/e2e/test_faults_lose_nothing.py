"""Faults that used to lose a checkpoint or loop forever, each in both transfers where it matters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import (
    EVERY_MODE,
    TOKEN,
    Mode,
    assert_byte_identical,
    commit_count,
    expected_repo,
    repos,
    snapshot_sources,
)
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, run_uploader, uploader_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def watch(hub, out: Path, tmp_path: Path, *extra: str, name: str = "uploader", **env: str):
    return UploaderProcess(["watch", "--output-dir", str(out), *extra],
                           uploader_env(hub.url, TOKEN, **env), tmp_path / f"{name}.log").start()


def rows(hub, out: Path) -> dict[str, dict]:
    result = run_uploader(["status", "--output-dir", str(out), "--json"],
                          uploader_env(hub.url, None))
    return {row["folder"]: row for row in json.loads(result.stdout or "[]")}


@EVERY_MODE
def test_staging_failure_keeps_the_checkpoint_pending_until_it_can_be_staged(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    sources = snapshot_sources(out)
    finish_run(out, Outcome.COMPLETED)
    # Staging cannot work while its folder's place is taken by a file (as root, where no
    # permission bit stops us, this is the simplest OSError to provoke).
    (out / ".uploader").mkdir()
    blocker = out / ".uploader" / "staging"
    blocker.write_text("not a folder")
    proc = watch(hub, out, tmp_path, "--exit-when-done")
    wait_for(lambda: "cannot stage" in (rows(hub, out).get("checkpoint-50", {})
                                        .get("last_error") or ""), 60, "the staging error")
    row = rows(hub, out)["checkpoint-50"]
    assert row["state"] == "pending", row
    assert proc.running(), "it exited while a checkpoint was not uploaded"
    blocker.unlink()
    assert proc.wait(120) == 0, proc.output()
    repo = expected_repo(out, "checkpoint-50")
    assert repos(api) == [repo] and commit_count(api, repo) == 2
    assert_byte_identical(api, repo, sources["checkpoint-50"], tmp_path / "dl")


def test_token_revoked_mid_run_ends_exit_when_done_with_one_line(hub, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    finish_run(out, Outcome.COMPLETED)
    # Every call after start-up is refused, as when the token is revoked mid-run.
    hub.add_faults({"action": "status", "status": 401, "path": "^/api/(?!whoami)",
                    "message": "Invalid credentials in Authorization header"})
    started = time.monotonic()
    proc = watch(hub, out, tmp_path, "--exit-when-done", "--auth-failure-grace", "3")
    assert proc.wait(90) == 1, proc.output()
    assert time.monotonic() - started < 60
    lines = [line for line in proc.output().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "HF_TOKEN" in lines[0], proc.output()[-2000:]
    assert (out / "checkpoint-50").is_dir()  # nothing local is touched


@EVERY_MODE
def test_verify_deep_repairs_corrupted_content_for_real(hub, api, tmp_path, transfer_mode):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    for step in (50, 100):
        write_checkpoint(out, step, run_id=info.run_id, adapter_bytes=2 * 1024 * 1024)
    sources = snapshot_sources(out)
    finish_run(out, Outcome.COMPLETED)
    env = uploader_env(hub.url, TOKEN)
    assert run_uploader(["backfill", "--output-dir", str(out)], env).returncode == 0
    repo = expected_repo(out, "checkpoint-50")
    # Stored bytes flipped, listings untouched: only reading the content back can tell.
    hub.add_faults({"action": "damage", "repo": repo, "file": "adapter_model.safetensors",
                    "mode": "corrupt"})
    deep = run_uploader(["verify", "--deep", "--output-dir", str(out)], env)
    assert deep.returncode == 0, deep.stdout + deep.stderr[-3000:]
    assert "1 damaged (1 repaired)" in deep.stdout, deep.stdout
    assert "repaired (read back)" in deep.stderr
    assert commit_count(api, repo) == 3, "initial + upload + repair"
    assert_byte_identical(api, repo, sources["checkpoint-50"], tmp_path / "dl")
    again = run_uploader(["verify", "--deep", "--output-dir", str(out)], env)
    assert again.returncode == 0 and "2 intact" in again.stdout, again.stdout


@EVERY_MODE
def test_prune_check_deep_reads_back_and_repairs_before_deleting(hub, api, tmp_path,
                                                                transfer_mode):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    sources = {}
    for step, loss in ((50, 2.0), (100, 1.0)):
        write_checkpoint(out, step, run_id=info.run_id, eval_loss=loss)
        sources[step] = snapshot_sources(out)[f"checkpoint-{step}"]
    env = uploader_env(hub.url, TOKEN)
    assert run_uploader(["backfill", "--output-dir", str(out)], env).returncode == 0
    repo50 = expected_repo(out, "checkpoint-50")
    # Invisible to listings: a content check of the listing would prune over it.
    hub.add_faults({"action": "damage", "repo": repo50, "file": "optimizer.pt", "mode": "corrupt"})
    write_checkpoint(out, 150, run_id=info.run_id, eval_loss=0.5)
    finish_run(out, Outcome.COMPLETED)
    proc = watch(hub, out, tmp_path, "--prune", "--prune-check", "deep", "--exit-when-done")
    assert proc.wait(180) == 0, proc.output()[-3000:]
    assert not (out / "checkpoint-50").exists()
    lines = proc.output().splitlines()
    damaged = next(i for i, line in enumerate(lines) if "remote copy damaged" in line)
    pruned = next(i for i, line in enumerate(lines)
                  if "pruned local checkpoint" in line and "folder=checkpoint-50 " in line)
    assert damaged < pruned
    assert commit_count(api, repo50) == 3, "initial + upload + repair"
    assert_byte_identical(api, repo50, sources[50], tmp_path / "dl")


def test_verify_never_calls_a_settling_local_copy_gone(hub, api, tmp_path):
    # A plain Trainer's folders (no markers), uploaded with a short settle window; `verify`
    # then runs with the default 30 s one while the folder is younger than that.
    out = tmp_path / "out"
    write_checkpoint(out, 50, marker=False, run_id=None)
    sources = snapshot_sources(out)
    quick = uploader_env(hub.url, TOKEN, UPLOADER_SETTLE_SECONDS="0.5")
    assert run_uploader(["backfill", "--output-dir", str(out)], quick).returncode == 0
    repo = expected_repo(out, "checkpoint-50")
    hub.add_faults({"action": "damage", "repo": repo, "file": "optimizer.pt", "mode": "drop"})
    slow = uploader_env(hub.url, TOKEN, UPLOADER_SETTLE_SECONDS="30")
    first = run_uploader(["verify", "--output-dir", str(out)], slow)
    assert "no longer holds this version" not in first.stderr, first.stderr[-2000:]
    assert rows(hub, out)["checkpoint-50"]["state"] == "pending"
    # Still due: the next pass (here `backfill`; `watch` alike) uploads it again once settled.
    again = run_uploader(["backfill", "--output-dir", str(out)], quick)
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert_byte_identical(api, repo, sources["checkpoint-50"], tmp_path / "dl")


@pytest.mark.parametrize(("transfer_mode", "path"), [
    (Mode.XET, "/preupload/"),  # huggingface_hub's own http_backoff wraps preupload...
    (Mode.DISABLED, "/info/lfs/objects/batch"),  # ...and the LFS batch call
], indirect=["transfer_mode"])
def test_an_announced_wait_beyond_the_cap_is_never_slept_inside_the_library(
        hub, tmp_path, transfer_mode, path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    finish_run(out, Outcome.COMPLETED)
    hub.add_faults({"action": "status", "status": 429, "retry_after": 7200, "path": path})
    started = time.monotonic()
    result = run_uploader(["backfill", "--output-dir", str(out), "--max-rate-limit-wait", "10"],
                          uploader_env(hub.url, TOKEN), timeout=120)
    assert time.monotonic() - started < 60, "slept the announced two hours"
    assert result.returncode == 1
    row = rows(hub, out)["checkpoint-50"]
    assert row["state"] == "pending" and "429" in (row["last_error"] or ""), row
