"""`make demo` end to end: the real tiny Trainer and the uploader as two processes over devhub.

One run of the demo script backs several acceptance points: every checkpoint of the seed's
schedule uploaded and verified while training runs (not after), the uploader's offline W&B run
holding each step and exact URL with its reference artifact, and a canary token that appears
nowhere: not in the output, the logs, the state, the W&B files or the uploaded files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devhub.xet import STORAGE_PREFIX
from shared.markers import parse_utc
from shared.run_info import read_run_info
from tests.support.wandb_records import read_runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
CANARY = "hf_CANARYtokenDEMOxyz0123456789abcdef"
STEPS = list(range(50, 451, 50))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["DEMO_HF_TOKEN"] = CANARY
    result = subprocess.run([sys.executable, "scripts/demo.py", "--work-dir", str(work)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = work / "llama3-medical-ner-lora"
    status = subprocess.run([sys.executable, "-m", "uploader", "status", "--json",
                             "--output-dir", str(out)], capture_output=True, text=True,
                            check=True, cwd=REPO_ROOT)
    return result, work, out, json.loads(status.stdout)


def test_demo_uploads_every_checkpoint_and_the_final_adapter(demo):
    result, _work, _out, rows = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [r["step"] for r in rows if r["kind"] == "checkpoint"] == STEPS
    assert [r["kind"] for r in rows].count("final") == 1
    assert all(r["state"] == "verified" for r in rows)
    for row in rows:
        assert row["repo_id"] in result.stdout and row["url"] in result.stdout
    assert "offline W&B runs" in result.stdout


def test_checkpoints_are_uploaded_while_training_runs(demo):
    _result, _work, out, rows = demo
    ended = parse_utc(read_run_info(out).ended_at).timestamp()
    first = next(r for r in rows if r["step"] == 50)
    assert first["verified_at"] < ended, "checkpoint-50 should be on the Hub before training ends"


def test_uploader_wandb_run_has_each_step_url_and_reference(demo):
    _result, work, _out, rows = demo
    # The demo sets WANDB_DIR to its work dir: the uploader's run is there, as W&B defines it.
    runs = [r for r in read_runs(work) if r.job_type == "upload"]
    assert len({r.run_id for r in runs}) == 1
    history = [h for run in runs for h in run.history if "checkpoint_url" in h]
    logged = {(h["checkpoint_step"], h["checkpoint_url"]) for h in history}
    for row in rows:
        assert (row["step"], row["url"]) in logged
    artifacts = [a for run in runs for a in run.artifacts]
    references = {url for a in artifacts for url in a.references.values()}
    # Each reference is pinned to the verified commit (`<repo url>/tree/<sha>`), not the head.
    assert {f"{r['url']}/tree/{r['commit_sha']}" for r in rows} <= references
    aliases = {alias for a in artifacts for alias in a.aliases}
    assert {f"step-{s}" for s in STEPS} | {"final", "best"} <= aliases


def test_canary_token_appears_nowhere(demo):
    result, work, _out, _rows = demo
    assert CANARY not in result.stdout + result.stderr
    leaks = []
    for path in work.rglob("*"):
        if path.is_file() and not path.is_symlink() and CANARY.encode() in path.read_bytes():
            leaks.append(str(path.relative_to(work)))
    assert leaks == []


def test_demo_uploads_through_xet_by_default(demo):
    # `make demo` sets no transfer: the uploader's default takes the production path.
    _result, work, _out, _rows = demo
    entries = [json.loads(line) for line in (work / "hub" / "requests.jsonl").read_text()
               .splitlines() if line.strip()]
    posted = [e["path"] for e in entries if e["method"] == "POST"]
    assert any(p.startswith(STORAGE_PREFIX) and "/xorbs/" in p for p in posted), "no xorb upload"
    assert any(p.startswith(STORAGE_PREFIX) and "/shards" in p for p in posted), "no shard upload"
    assert not any("/info/lfs/objects/batch" in p for p in posted), "the demo fell back to LFS"
