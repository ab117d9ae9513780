"""The uploader's promises that concern versions, restored checkpoints and its CLI surface."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.markers import build_marker, write_marker
from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import TOKEN, commit_count, expected_repo, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, run_uploader, uploader_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def backfill(hub, out, *extra):
    return run_uploader(["backfill", "--output-dir", str(out), *extra],
                        uploader_env(hub.url, TOKEN))


def test_rewritten_checkpoint_is_a_new_version_with_its_own_repo(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id, seed=1,
                     now=datetime.now(UTC) - timedelta(hours=1))
    assert backfill(hub, out).returncode == 0
    first = expected_repo(out, "checkpoint-50")
    # A restarted run without resume saves checkpoint-50 again, in place, with other bytes.
    write_checkpoint(out, 50, run_id=info.run_id, seed=2)
    result = backfill(hub, out)
    assert result.returncode == 0, result.stderr
    second = expected_repo(out, "checkpoint-50")
    assert first != second
    assert repos(api) == sorted([first, second])
    assert commit_count(api, first) == 2  # the old repo is left alone


def test_checkpoint_restored_from_the_hub_is_never_uploaded_again(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=True)
    folder = write_checkpoint(out, 50, run_id=info.run_id, marker=False)
    origin = "alice/llama3-medical-ner-checkpoint-50-20251104_143022"
    write_marker(out, build_marker(out, folder.name, run_id=info.run_id, step=50,
                                   origin_repo=origin))
    assert backfill(hub, out).returncode == 0
    assert repos(api) == []
    rows = json.loads(run_uploader(["status", "--json", "--output-dir", str(out)],
                                   uploader_env(hub.url, None)).stdout)
    assert [(r["state"], r["repo_id"]) for r in rows] == [("verified", origin)]


def test_backfill_dry_run_lists_the_plan_and_changes_nothing(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    write_checkpoint(out, 100, run_id=info.run_id)
    assert backfill(hub, out).returncode == 0
    write_checkpoint(out, 150, run_id=info.run_id)
    status = ["status", "--json", "--output-dir", str(out)]
    before = run_uploader(status, uploader_env(hub.url, None)).stdout
    staged = sorted((out / ".uploader" / "staging").iterdir())
    result = backfill(hub, out, "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "skip" in plan["checkpoint-50"] and "skip" in plan["checkpoint-100"]
    assert "upload" in plan["checkpoint-150"]
    assert len(repos(api)) == 2
    assert run_uploader(status, uploader_env(hub.url, None)).stdout == before
    assert sorted((out / ".uploader" / "staging").iterdir()) == staged


def test_status_health_follows_the_watcher(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = uploader_env(hub.url, TOKEN)
    health = ["status", "--health", "--output-dir", str(out)]
    assert run_uploader(health, env).returncode == 1
    proc = UploaderProcess(["watch", "--output-dir", str(out)], env,
                           tmp_path / "watch.log").start()
    try:
        wait_for(lambda: run_uploader(health, env).returncode == 0, 60, "a healthy watcher")
        assert run_uploader([*health, "--health-max-age", "0"], env).returncode == 1
    finally:
        proc.stop()
    assert run_uploader(health, env).returncode == 1


def test_polling_observer_and_json_logs(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--poll", "--poll-interval", "0.5",
                            "--scan-interval", "600", "--log-format", "json",
                            "--exit-when-done"],
                           uploader_env(hub.url, TOKEN), tmp_path / "watch.log").start()
    proc.wait_output('"watching"', 60)
    write_checkpoint(out, 50, run_id=info.run_id)
    finish_run(out, Outcome.COMPLETED)
    assert proc.wait(120) == 0, proc.output()
    assert repos(api) == [expected_repo(out, "checkpoint-50")]
    records = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    verified = [r for r in records if r["message"] == "checkpoint verified"]
    assert verified and verified[0]["step"] == 50
    assert all(TOKEN not in line for line in proc.output().splitlines())


def test_folder_without_marker_waits_for_the_settle_window(hub, api, tmp_path):
    # A trainer without our callback writes neither markers nor run info.
    out = tmp_path / "out"
    out.mkdir()
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--settle-seconds", "3"],
                           uploader_env(hub.url, TOKEN), tmp_path / "watch.log").start()
    try:
        proc.wait_output("watching", 60)
        folder = write_checkpoint(out, 50, run_id=None, marker=False)
        written = max(p.stat().st_mtime for p in folder.iterdir())
        wait_for(lambda: repos(api), 60, "the upload")
        created = time.time()
        assert created - written >= 3, "uploaded before the settle window ended"
    finally:
        proc.stop()
    assert os.path.isdir(folder)


def test_while_the_run_is_in_progress_only_markers_count(hub, api, tmp_path):
    """A folder the trainer paused in (the final adapter during its F1 evaluation) looks
    settled; with run info saying the run is on, only the marker may declare it complete."""
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--settle-seconds", "0.5",
                            "--exit-when-done", "--log-level", "DEBUG"],
                           uploader_env(hub.url, TOKEN), tmp_path / "watch.log").start()
    write_checkpoint(out, 50, run_id=info.run_id, marker=False, final=True)
    proc.wait_output("waiting for the trainer's completion marker", 60)
    assert repos(api) == []
    write_marker(out, build_marker(out, "final", run_id=info.run_id, step=50))
    wait_for(lambda: repos(api), 60, "the final adapter's upload")
    finish_run(out, Outcome.COMPLETED)
    assert proc.wait(60) == 0, proc.output()
    assert repos(api) == [expected_repo(out, "final")]
