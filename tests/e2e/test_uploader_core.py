"""The uploader core against devhub through the real client: exactly once, byte-identical."""

from __future__ import annotations

import random
import shutil
import threading
from pathlib import Path

import pytest

from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import (
    EVERY_MODE,
    OTHER,
    PREFIX,
    READ_TOKEN,
    TOKEN,
    USER,
    assert_byte_identical,
    assert_transfer,
    commit_count,
    expected_repo,
    is_upload,
    repos,
    snapshot_sources,
    upload_rule,
)
from tests.support.checkpoints import folder_bytes, write_checkpoint
from tests.support.processes import UploaderProcess, run_uploader, uploader_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
STEPS = (50, 100, 150)


def write_run(output_dir: Path, steps=STEPS, final: bool = True, **kw) -> dict[str, dict]:
    info = start_run(output_dir, base_model="meta-llama/Meta-Llama-3-8B-Instruct", resume=False)
    for step in steps:
        write_checkpoint(output_dir, step, run_id=info.run_id, **kw)
    if final:
        write_checkpoint(output_dir, steps[-1], run_id=info.run_id, final=True, **kw)
    sources = snapshot_sources(output_dir)
    finish_run(output_dir, Outcome.COMPLETED)
    return sources


def expected_repos(output_dir: Path, names) -> dict[str, str]:
    return {name: expected_repo(output_dir, name) for name in names}


def check_exactly_once(api, output_dir, sources, tmp_path, expected=None) -> None:
    expected = expected or expected_repos(output_dir, sources)
    assert repos(api) == sorted(expected.values())
    for name, repo_id in expected.items():
        assert commit_count(api, repo_id) == 2, f"{repo_id}: one initial + one upload commit"
        assert_byte_identical(api, repo_id, sources[name], tmp_path / "dl")


def watch(hub, output_dir, tmp_path, *extra, token=TOKEN, name="uploader", **env):
    return UploaderProcess(["watch", "--output-dir", str(output_dir), *extra],
                           uploader_env(hub.url, token, **env), tmp_path / f"{name}.log").start()


@EVERY_MODE
def test_watch_uploads_every_checkpoint_once_and_exits_when_done(hub, api, tmp_path,
                                                                 transfer_mode):
    out = tmp_path / "out"
    sources = write_run(out)
    proc = watch(hub, out, tmp_path, "--exit-when-done")
    assert proc.wait(120) == 0, proc.output()
    check_exactly_once(api, out, sources, tmp_path)
    assert_transfer(hub, transfer_mode)
    assert "Checkpoint at step 50" in [c.title for c in api.list_repo_commits(
        expected_repo(out, "checkpoint-50"))]
    assert "Step: 150" in proc.output()
    status = run_uploader(["status", "--output-dir", str(out), "--json"],
                          uploader_env(hub.url, None))
    import json

    rows = json.loads(status.stdout)
    assert {r["state"] for r in rows} == {"verified"} and len(rows) == 4
    assert sum(r["best"] for r in rows) == 1


@EVERY_MODE
def test_checkpoints_without_markers_are_uploaded_after_settling(hub, api, tmp_path):
    out = tmp_path / "out"
    sources = write_run(out, marker=False, final=False)
    proc = watch(hub, out, tmp_path, "--exit-when-done")
    assert proc.wait(120) == 0, proc.output()
    check_exactly_once(api, out, sources, tmp_path)


@EVERY_MODE
def test_rotation_deleting_queued_and_in_flight_folders_loses_nothing(hub, api, tmp_path,
                                                                      transfer_mode):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    # Slow uploads: each checkpoint takes a while, so later ones queue up behind it.
    hub.add_faults(upload_rule(transfer_mode, action="throttle", bytes_per_second=400_000))
    proc = watch(hub, out, tmp_path)
    proc.wait_output("watching", 60)
    sources: dict[str, dict] = {}
    for step in (50, 100, 150, 200):
        folder = write_checkpoint(out, step, run_id=info.run_id, adapter_bytes=300_000)
        sources[folder.name] = folder_bytes(folder)
        # Trainer saves every 50 steps; the sidecar snapshots a checkpoint within that time.
        proc.wait_output(f"staged {folder.name}", 30)
        # save_total_limit=1: Trainer deletes every older checkpoint right after a save.
        for old in out.glob("checkpoint-*"):
            if old != folder:
                expected = expected_repo(out, old.name)
                sources.setdefault("__repos__", {})[old.name] = expected
                shutil.rmtree(old)
    expected = dict(sources.pop("__repos__"))
    expected["checkpoint-200"] = expected_repo(out, "checkpoint-200")
    wait_for(lambda: len(repos(api)) == 4 and all(
        commit_count(api, r) == 2 for r in repos(api)), 120, "4 repos with one upload each")
    proc.stop()
    check_exactly_once(api, out, sources, tmp_path, expected)


@EVERY_MODE
def test_503_429_reset_and_stall_each_checkpoint_exactly_once(hub, api, tmp_path,
                                                             transfer_mode):
    out = tmp_path / "out"
    sources = write_run(out, adapter_bytes=11 * 1024 * 1024 // 4 * 4, steps=(50, 100))
    hub.add_faults([
        {"action": "status", "status": 503, "path": "^/api/repos/create$", "times": 3},
        {"action": "status", "status": 429, "retry_after": 1, "path": "/commit/", "times": 1},
        upload_rule(transfer_mode, action="reset", when="mid_body", times=1),
        {"action": "stall", "path": "/commit/", "times": 1, "seconds": 30},
        {"action": "status", "status": 502, "path": "/paths-info/", "times": 2},
    ])
    proc = watch(hub, out, tmp_path, "--exit-when-done", UPLOADER_READ_TIMEOUT="3")
    assert proc.wait(180) == 0, proc.output()
    check_exactly_once(api, out, sources, tmp_path)
    assert all(rule["hits"] >= 1 for rule in hub.faults()), hub.faults()


# The start-up refusals below end before any file is sent, so the transfer cannot change them:
# they run in the default mode only.
def test_401_at_start_exits_2_with_one_line(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_uploader(["watch", "--output-dir", str(out)],
                          uploader_env(hub.url, "hf_not_a_valid_token_canary"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "hf_not_a_valid_token_canary" not in result.stderr + result.stdout


@pytest.mark.parametrize("case", ["read-only", "foreign-namespace"])
def test_token_that_cannot_write_is_a_startup_error(hub, tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    token, extra = (READ_TOKEN, {}) if case == "read-only" else (TOKEN, {"HUB_NAMESPACE": OTHER})
    result = run_uploader(["backfill", "--output-dir", str(out)],
                          uploader_env(hub.url, token, **extra))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@EVERY_MODE
def test_kill_9_at_random_moments_gives_one_repo_per_checkpoint(hub, api, tmp_path,
                                                                transfer_mode):
    out = tmp_path / "out"
    rng = random.Random(20261128)
    sources = write_run(out, steps=(50, 100, 150, 200), adapter_bytes=2 * 1024 * 1024)
    hub.add_faults(upload_rule(transfer_mode, action="throttle", bytes_per_second=3_000_000))
    kills = 0
    while kills < 20:
        proc = watch(hub, out, tmp_path, "--exit-when-done", name=f"run{kills}")
        try:
            proc.wait(rng.uniform(0.3, 2.5))
            if proc.proc.returncode == 0:
                break  # finished before this kill: restart and kill again
        except Exception:
            proc.kill9()
            kills += 1
    final = watch(hub, out, tmp_path, "--exit-when-done", name="final")
    assert final.wait(180) == 0, final.output()
    check_exactly_once(api, out, sources, tmp_path)


@EVERY_MODE
def test_state_lost_after_crash_between_create_repo_and_commit(hub, api, tmp_path):
    out = tmp_path / "out"
    sources = write_run(out, steps=(50, 100))
    # The first commit never answers: the uploader is killed with an empty repo on the Hub.
    [stall] = hub.add_faults({"action": "stall", "path": "/commit/", "times": 1})
    proc = watch(hub, out, tmp_path)
    # A stalled request is logged only when it ends: the rule's hit count says it arrived.
    wait_for(lambda: any(r["id"] == stall["id"] and r["hits"] for r in hub.faults()), 60,
             "the first commit request, stalled")
    proc.kill9()
    # One upload at a time (the default): the stalled commit's repo is the only one, and empty.
    [created] = repos(api)
    assert set(api.list_repo_files(created)) <= {".gitattributes"}
    shutil.rmtree(out / ".uploader")
    again = watch(hub, out, tmp_path, "--exit-when-done", name="again")
    assert again.wait(120) == 0, again.output()
    check_exactly_once(api, out, sources, tmp_path)


@EVERY_MODE
def test_state_dir_deleted_mid_run_creates_no_duplicate(hub, api, tmp_path):
    out = tmp_path / "out"
    sources = write_run(out, steps=(50, 100, 150))
    first = watch(hub, out, tmp_path)
    wait_for(lambda: len(repos(api)) >= 2, 60, "two repos")
    first.kill9()
    shutil.rmtree(out / ".uploader")
    second = watch(hub, out, tmp_path, "--exit-when-done", name="second")
    assert second.wait(120) == 0, second.output()
    check_exactly_once(api, out, sources, tmp_path)


@EVERY_MODE
def test_two_uploaders_on_one_directory_upload_nothing_twice(hub, api, tmp_path):
    out = tmp_path / "out"
    sources = write_run(out)
    a = watch(hub, out, tmp_path, "--exit-when-done", "--wait-for-lock", name="a")
    b = watch(hub, out, tmp_path, "--exit-when-done", "--wait-for-lock", name="b")
    assert a.wait(120) == 0, a.output()
    assert b.wait(120) == 0, b.output()
    check_exactly_once(api, out, sources, tmp_path)
    # Without --wait-for-lock, a second uploader exits at once and names the holder's pid.
    holder = watch(hub, out, tmp_path, name="holder")
    wait_for(lambda: "watching" in holder.output(), 60, "holder watching")
    refused = run_uploader(["watch", "--output-dir", str(out)], uploader_env(hub.url, TOKEN))
    holder.stop()
    assert refused.returncode == 2 and str(holder.pid) in refused.stderr, refused.stderr


@EVERY_MODE
def test_sigterm_drains_within_grace_and_backfill_completes_the_rest(hub, api, tmp_path,
                                                                     transfer_mode):
    out = tmp_path / "out"
    sources = write_run(out, steps=(50, 100, 150), adapter_bytes=3 * 1024 * 1024)
    hub.add_faults(upload_rule(transfer_mode, action="throttle", bytes_per_second=1_000_000))
    proc = watch(hub, out, tmp_path, "--drain-grace", "2")
    wait_for(lambda: any(is_upload(transfer_mode, e) for e in hub.log()), 60, "an upload")
    stopped = threading.Event()
    import time

    started = time.monotonic()
    proc.terminate()
    assert proc.wait(20) == 0
    stopped.set()
    assert time.monotonic() - started < 10
    hub.clear_faults()
    result = run_uploader(["backfill", "--output-dir", str(out)], uploader_env(hub.url, TOKEN))
    assert result.returncode == 0, result.stderr
    check_exactly_once(api, out, sources, tmp_path)
    assert PREFIX in repos(api)[0] and USER in repos(api)[0]
