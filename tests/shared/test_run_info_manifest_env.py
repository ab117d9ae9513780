import json
import subprocess
import sys
import uuid

import pytest

from shared.env import TokenError, read_token, shadowed_token_file
from shared.layout import Kind
from shared.manifest import Manifest, ManifestError, ManifestFile, read_metrics
from shared.run_info import Outcome, RunInfoError, finish_run, read_run_info, start_run


def test_run_id_kept_on_resume_new_on_fresh_start(tmp_path):
    first = start_run(tmp_path, base_model="tiny", resume=False, wandb_project="p")
    uuid.UUID(first.run_id)
    assert first.wandb_group == first.run_id
    finish_run(tmp_path, Outcome.FAILED)
    resumed = start_run(tmp_path, base_model="tiny", resume=True)
    assert resumed.run_id == first.run_id
    assert resumed.wandb_run_id == first.wandb_run_id
    assert resumed.outcome is None and not resumed.ended
    fresh = start_run(tmp_path, base_model="tiny", resume=False)
    assert fresh.run_id != first.run_id


def test_finish_records_outcome(tmp_path):
    start_run(tmp_path, base_model="m", resume=False)
    finish_run(tmp_path, Outcome.COMPLETED)
    info = read_run_info(tmp_path)
    assert info.ended and info.outcome is Outcome.COMPLETED and info.ended_at


def test_malformed_run_info(tmp_path):
    (tmp_path / "run_info.json").write_text('{"run_id": "not-a-uuid"}')
    with pytest.raises(RunInfoError):
        read_run_info(tmp_path)
    assert read_run_info(tmp_path / "missing") is None


def test_manifest_round_trip():
    manifest = Manifest(
        run_id="r", step=50, kind=Kind.CHECKPOINT, source_host="h", folder="checkpoint-50",
        created_at="2026-01-01T00:00:00Z",
        files=(ManifestFile("README.md", 10, "a" * 64, generated=True),
               ManifestFile("adapter_model.safetensors", 100, "b" * 64)),
        metrics={"eval_loss": 1.5},
    )
    loaded = Manifest.from_bytes(manifest.to_bytes())
    assert loaded == manifest
    assert loaded.generated_files == ["README.md"]
    assert json.loads(manifest.to_bytes())["generated_files"] == ["README.md"]
    with pytest.raises(ManifestError):
        Manifest.from_bytes(b'{"run_id": "r"}')


def test_read_metrics(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({
        "epoch": 1.0, "best_metric": 0.5,
        "log_history": [{"loss": 2.0, "step": 10}, {"eval_loss": 1.25, "step": 50}],
    }))
    assert read_metrics(tmp_path) == {"loss": 2.0, "eval_loss": 1.25, "epoch": 1.0,
                                      "best_metric": 0.5}
    assert read_metrics(tmp_path / "nothing") == {}


def test_hf_token_wins_over_the_file_and_errors_name_the_setting(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("hf_file\n")
    both = {"HF_TOKEN": "hf_env", "HF_TOKEN_FILE": str(secret)}
    assert read_token(both) == "hf_env"
    assert shadowed_token_file(both) == str(secret)
    assert read_token({"HF_TOKEN": "", "HF_TOKEN_FILE": str(secret)}) == "hf_file"
    assert shadowed_token_file({"HF_TOKEN_FILE": str(secret)}) is None
    assert read_token({"HF_TOKEN": "hf_env"}) == "hf_env"
    assert read_token({}) is None
    with pytest.raises(TokenError, match="HF_TOKEN_FILE"):
        read_token({"HF_TOKEN_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("")
    with pytest.raises(TokenError, match="empty"):
        read_token({"HF_TOKEN_FILE": str(tmp_path / "empty")})


def test_import_shared_pulls_in_no_third_party_module():
    code = (
        "import sys, pkgutil, shared\n"
        "for m in pkgutil.iter_modules(shared.__path__): __import__('shared.' + m.name)\n"
        "roots = {n.split('.')[0] for n in sys.modules}\n"
        "print(sorted(r for r in roots if r not in sys.stdlib_module_names and r != 'shared'"
        " and not r.startswith('_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
