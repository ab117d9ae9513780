"""Pruning, verification on demand, `best` and `cleanup` against devhub, as real processes.

Synthetic checkpoints (with chosen eval_loss values, so the best is not the newest) where the
exact outcome matters; the real tiny Trainer where only the interplay with rotation does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from shared.manifest import MANIFEST_FILENAME
from shared.run_info import Outcome, finish_run, read_run_info, start_run
from tests.e2e.conftest import (
    EVERY_MODE,
    TOKEN,
    USER,
    assert_byte_identical,
    commit_count,
    expected_repo,
    repos,
)
from tests.support.checkpoints import folder_bytes, write_checkpoint
from tests.support.processes import UploaderProcess, run_uploader, uploader_env
from tests.support.waiting import wait_for
from uploader.errors import ConfigError
from uploader.state import DB_FILENAME, StateStore

pytestmark = pytest.mark.e2e
# The best (100) is neither the newest nor the oldest.
LOSSES = {50: 2.0, 100: 1.0, 150: 1.5, 200: 1.7, 250: 1.8}
# Twenty saves a few hundred milliseconds apart: passes and saves overlap all the time.
TRAINER_ARGS = ["--base-model", "tiny", "--max-steps", "200", "--save-steps", "10",
                "--eval-steps", "10", "--logging-steps", "10", "--max-train-samples", "64",
                "--max-eval-samples", "8", "--per-device-train-batch-size", "2",
                "--gradient-accumulation-steps", "1", "--f1-max-samples", "4",
                "--f1-max-new-tokens", "8", "--max-seq-length", "160", "--cpu-threads", "1"]


def watch(hub, out: Path, tmp_path: Path, *extra: str, name: str = "uploader") -> UploaderProcess:
    return UploaderProcess(["watch", "--output-dir", str(out), *extra],
                           uploader_env(hub.url, TOKEN), tmp_path / f"{name}.log").start()


def uploader(hub, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    return run_uploader(list(args), uploader_env(hub.url, token))


def states(out: Path) -> dict[str, str]:
    """Folder -> state of its newest record, read like `status` (no writer lock)."""
    if not (out / ".uploader" / DB_FILENAME).exists():
        return {}
    try:
        with StateStore.open(out / ".uploader", readonly=True) as store:
            return {r.folder: str(r.state) for r in store.all()}
    except ConfigError:  # the watcher is creating the schema right now
        return {}


def local_folders(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.name.startswith("checkpoint-") or
            p.name == "final" or p.name.startswith(".pruning-")}


def status_rows(hub, out: Path) -> dict[str, dict]:
    result = uploader(hub, "status", "--output-dir", str(out), "--json", token=None)
    assert result.returncode == 0, result.stderr
    return {row["folder"]: row for row in json.loads(result.stdout)}


def write_synthetic_run(out: Path, steps=tuple(LOSSES), final: bool = True,
                        now: datetime | None = None) -> dict:
    """`now` dates the markers, hence the repo names: two runs need two different ones."""
    info = start_run(out, base_model="meta-llama/Meta-Llama-3-8B-Instruct", resume=False)
    for step in steps:
        write_checkpoint(out, step, run_id=info.run_id, eval_loss=LOSSES[step], now=now)
    if final:
        write_checkpoint(out, steps[-1], run_id=info.run_id, final=True, now=now)
    sources = {p.name: folder_bytes(p) for p in out.iterdir() if p.name in local_folders(out)}
    finish_run(out, Outcome.COMPLETED)
    return sources


@EVERY_MODE
def test_prune_during_the_run_keeps_exactly_the_newest_and_the_best(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    proc = watch(hub, out, tmp_path, "--prune", "--keep-last", "1", "--exit-when-done")
    sources = {}
    for step, loss in LOSSES.items():
        folder = write_checkpoint(out, step, run_id=info.run_id, eval_loss=loss)
        sources[folder.name] = folder_bytes(folder)
        wait_for(lambda name=folder.name: states(out).get(name) == "verified", 60,
                 f"{folder.name} verified")
        if step == 150:
            # Admitting checkpoint-150 is a completed save: 50 (verified, not the newest, not
            # the best) goes at once, while training goes on.
            wait_for(lambda: not (out / "checkpoint-50").exists(), 30, "checkpoint-50 pruned")
    final = write_checkpoint(out, 250, run_id=info.run_id, final=True)
    sources["final"] = folder_bytes(final)
    finish_run(out, Outcome.COMPLETED)
    assert proc.wait(120) == 0, proc.output()

    assert local_folders(out) == {"checkpoint-100", "checkpoint-250", "final"}
    rows = status_rows(hub, out)
    assert {name: row["state"] for name, row in rows.items()} == {
        "checkpoint-50": "pruned", "checkpoint-100": "verified", "checkpoint-150": "pruned",
        "checkpoint-200": "pruned", "checkpoint-250": "verified", "final": "verified"}
    assert [name for name, row in rows.items() if row["best"]] == ["checkpoint-100"]
    assert len(repos(api)) == 6
    for name in ("checkpoint-50", "checkpoint-200"):
        assert_byte_identical(api, rows[name]["repo_id"], sources[name], tmp_path / "dl")
    assert "pruned local checkpoint" in proc.output() and "freed_bytes=" in proc.output()


# A real Trainer run each: in the default mode only (what it checks, rotation racing pruning,
# is the same whatever carries the bytes; the modes are covered by the synthetic runs above).
@pytest.mark.parametrize("save_total_limit", [None, 2])
def test_real_trainer_with_pruning_never_fails(hub, api, tmp_path, save_total_limit):
    """Rotation lists checkpoint-* then stats each folder: pruning must never race it."""
    out = tmp_path / "out"
    proc = watch(hub, out, tmp_path, "--prune", "--exit-when-done")
    proc.wait_output("watching", 60)
    limit = ["--save-total-limit", str(save_total_limit)] if save_total_limit else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "WANDB_"))}
    trainer = subprocess.run([sys.executable, "-m", "trainer", "--output-dir", str(out),
                              *TRAINER_ARGS, *limit], env=env | {"WANDB_MODE": "disabled"},
                             capture_output=True, text=True, timeout=300)
    log = trainer.stdout + trainer.stderr
    assert trainer.returncode == 0, log[-3000:]
    assert "Traceback" not in log and "FileNotFoundError" not in log
    assert proc.wait(120) == 0, proc.output()

    rows = status_rows(hub, out)
    checkpoints = {n: r for n, r in rows.items() if r["kind"] == "checkpoint"}
    assert {r["state"] for r in rows.values()} <= {"verified", "pruned"}
    # (Rotation may delete a folder before it is detected; the core's tests cover that.)
    assert set(checkpoints) <= {f"checkpoint-{s}" for s in range(10, 201, 10)}
    newest = "checkpoint-200"
    best = next(n for n, r in checkpoints.items() if r["best"])
    kept = {p.name for p in out.glob("checkpoint-*")}
    if save_total_limit is None:
        assert kept == {newest, best}
    else:  # rotation may also have deleted the best; never the newest
        assert newest in kept and kept <= {newest, best}
    assert len(repos(api)) == len(rows) and "final" in rows and (out / "final").is_dir()
    assert read_run_info(out).outcome is Outcome.COMPLETED


@EVERY_MODE
def test_verify_detects_damage_and_uploads_again(hub, api, tmp_path):
    out = tmp_path / "out"
    sources = write_synthetic_run(out, steps=(50, 100, 150), final=False)
    assert uploader(hub, "backfill", "--output-dir", str(out)).returncode == 0
    repo = {name: expected_repo(out, name) for name in sources}
    assert uploader(hub, "verify", "--output-dir", str(out)).returncode == 0

    hub.add_faults([
        {"action": "damage", "repo": repo["checkpoint-50"], "file": "adapter_model.safetensors",
         "mode": "drop"},
        {"action": "damage", "repo": repo["checkpoint-100"], "file": "adapter_config.json",
         "mode": "wrong_hash"},
    ])
    result = uploader(hub, "verify", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 damaged (2 repaired)" in result.stdout, result.stdout
    assert "remote copy damaged" in result.stderr and repo["checkpoint-50"] in result.stderr
    for name in ("checkpoint-50", "checkpoint-100"):
        assert commit_count(api, repo[name]) == 3, "initial + upload + repair"
        assert_byte_identical(api, repo[name], sources[name], tmp_path / f"dl-{name}")
    downloads = sum("/resolve/" in e["path"] for e in hub.log())
    deep = uploader(hub, "verify", "--deep", "--output-dir", str(out))
    assert deep.returncode == 0 and "3 intact" in deep.stdout, deep.stdout + deep.stderr
    files = sum(len(f) + 1 for f in sources.values())  # + the manifest; README.md replaced
    assert sum("/resolve/" in e["path"] for e in hub.log()) - downloads >= files

    # The local copy is gone: nothing to upload again from, so it is loud and exit 1.
    shutil.rmtree(out / "checkpoint-150")
    hub.add_faults({"action": "damage", "repo": repo["checkpoint-150"], "file": "optimizer.pt",
                    "mode": "wrong_hash"})
    lost = uploader(hub, "verify", "--output-dir", str(out))
    assert lost.returncode == 1
    assert "local folder no longer holds this version" in lost.stderr
    assert states(out)["checkpoint-150"] == "failed"


@EVERY_MODE
def test_damaged_remote_copy_is_uploaded_again_before_it_is_pruned(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    sources = {}
    for step in (50, 100):
        sources[step] = folder_bytes(write_checkpoint(out, step, run_id=info.run_id,
                                                      eval_loss=LOSSES[step]))
    assert uploader(hub, "backfill", "--output-dir", str(out)).returncode == 0
    repo50 = expected_repo(out, "checkpoint-50")
    hub.add_faults({"action": "damage", "repo": repo50, "file": "optimizer.pt", "mode": "drop"})
    write_checkpoint(out, 150, run_id=info.run_id, eval_loss=0.5)
    finish_run(out, Outcome.COMPLETED)

    proc = watch(hub, out, tmp_path, "--prune", "--exit-when-done")
    assert proc.wait(120) == 0, proc.output()
    assert local_folders(out) == {"checkpoint-150"}
    lines = proc.output().splitlines()
    damaged = next(i for i, line in enumerate(lines) if "remote copy damaged" in line)
    reverified = next(i for i, line in enumerate(lines)
                      if "checkpoint verified" in line and "step=50 " in line)
    pruned = next(i for i, line in enumerate(lines)
                  if "pruned local checkpoint" in line and "folder=checkpoint-50 " in line)
    assert damaged < reverified < pruned
    assert commit_count(api, repo50) == 3
    assert_byte_identical(api, repo50, sources[50], tmp_path / "dl")


def make_foreign_repos(api: HfApi, run_id: str) -> list[str]:
    """Repos cleanup must never touch: unreadable manifest, none at all, another prefix (whose
    manifest claims this run and the lowest eval_loss: it would win if it were not skipped)."""
    ours = "llama3-medical-ner"
    made = []
    for name, manifest in (
        (f"{ours}-checkpoint-300-20990101_000000", b"{not json"),
        (f"{ours}-checkpoint-350-20990101_000000", None),
        (f"{ours}-v2-checkpoint-50-20990101_000000", json.dumps({
            "run_id": run_id, "step": 50, "kind": "checkpoint", "files": [],
            "metrics": {"eval_loss": 0.1}}).encode()),
    ):
        repo_id = f"{USER}/{name}"
        api.create_repo(repo_id, private=True)
        if manifest is not None:
            api.upload_file(path_or_fileobj=manifest, path_in_repo=MANIFEST_FILENAME,
                            repo_id=repo_id)
        made.append(repo_id)
    return made


def test_cleanup_plan_then_delete_and_best(hub, api, tmp_path):
    out, other = tmp_path / "out", tmp_path / "other-run"
    write_synthetic_run(out)
    write_synthetic_run(other, steps=(50,), final=False, now=datetime(2030, 1, 1, tzinfo=UTC))
    for folder in (out, other):
        assert uploader(hub, "backfill", "--output-dir", str(folder)).returncode == 0
    run_id = read_run_info(out).run_id
    foreign = make_foreign_repos(api, run_id)
    before = repos(api)

    plan = uploader(hub, "cleanup", "--output-dir", str(out), "--keep-best", "1",
                    "--keep-latest", "1", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    planned = {line.split()[1] for line in plan.stdout.splitlines()
               if line.strip().startswith("delete")}
    assert planned == {expected_repo(out, f"checkpoint-{s}") for s in (50, 150, 200)}
    assert "nothing deleted" in plan.stdout and repos(api) == before
    assert uploader(hub, "cleanup", "--output-dir", str(out)).returncode == 0  # plan only
    assert repos(api) == before

    done = uploader(hub, "cleanup", "--output-dir", str(out), "--keep-best", "1",
                    "--keep-latest", "1", "--yes")
    assert done.returncode == 0, done.stderr
    assert repos(api) == sorted(set(before) - planned)
    assert set(foreign) <= set(repos(api)) and expected_repo(other, "checkpoint-50") in repos(api)
    assert {states(out)[f"checkpoint-{s}"] for s in (50, 150, 200)} == {"deleted"}

    # Deleted versions stay deleted: neither backfill nor watch uploads them again.
    assert uploader(hub, "backfill", "--output-dir", str(out)).returncode == 0
    again = watch(hub, out, tmp_path, "--exit-when-done")
    assert again.wait(60) == 0, again.output()
    assert repos(api) == sorted(set(before) - planned)

    best_repo = expected_repo(out, "checkpoint-100")
    assert [n for n, row in status_rows(hub, out).items() if row["best"]] == ["checkpoint-100"]
    from_state = json.loads(uploader(hub, "best", "--output-dir", str(out), "--json").stdout)
    assert (from_state["repo_id"], from_state["value"], from_state["source"]) == (
        best_repo, 1.0, "state")
    shutil.rmtree(out / ".uploader")
    result = uploader(hub, "best", "--output-dir", str(out), "--json")
    from_hub = json.loads(result.stdout)
    assert (from_hub["repo_id"], from_hub["value"], from_hub["source"]) == (best_repo, 1.0, "hub")
    assert from_hub["url"] == f"{hub.url}/{best_repo}"
