"""Resume equals an uninterrupted run, through devhub.

Run A trains a 100-step schedule straight. Run B trains the same schedule but stops after step
50 (`--stop-after-step`: the scheduler is still the 100-step one); its checkpoint-50 is uploaded
to devhub the way the uploader would (files + `checkpoint_manifest.json` with a generated model
card), every local file but `run_info.json` is deleted (checkpoints, markers, even the tiny base
model), and `--resume hub` brings it back and finishes. CPU training is deterministic, so the
final adapters must be bit-identical (tolerance: exact equality, atol = rtol = 0).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file

from shared.layout import RUN_INFO_FILENAME, Kind
from shared.manifest import MANIFEST_FILENAME
from shared.markers import read_marker
from shared.naming import make_repo_name
from shared.run_info import Outcome, read_run_info
from trainer.hub_restore import HfHubClient
from trainer.settings import TrainerSettings
from trainer.train import run

from .hubtools import manifest_for

devhub_testing = pytest.importorskip("devhub.testing")

USER, TOKEN = "alice", "hf_alice_resume_token"
ADAPTER = "adapter_model.safetensors"
SCHEDULE = dict(
    base_model="tiny", max_train_samples=1600, num_train_epochs=1,  # 1600 / (4 x 4) = 100 steps
    save_steps=50, eval_steps=50, max_eval_samples=32, f1_max_samples=8, f1_max_new_tokens=16,
    max_seq_length=160,
)


def upload_like_the_uploader(api: HfApi, out: Path, step: int, staging: Path) -> str:
    """Upload checkpoint-<step> with a manifest, as the uploader would (no uploader needed)."""
    marker = read_marker(out, f"checkpoint-{step}")
    assert marker is not None
    repo_id = make_repo_name(USER, "llama3-medical-ner", Kind.CHECKPOINT, step,
                             marker.written_datetime).repo_id
    folder = shutil.copytree(out / f"checkpoint-{step}", staging / f"checkpoint-{step}")
    manifest = manifest_for(folder, run_id=marker.run_id, step=step, card=b"# generated card\n")
    api.create_repo(repo_id, private=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=f"step {step}")
    api.upload_file(repo_id=repo_id, path_or_fileobj=manifest.to_bytes(),
                    path_in_repo=MANIFEST_FILENAME)
    return repo_id


@pytest.mark.slow
def test_resume_from_hub_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = run(TrainerSettings(**SCHEDULE, output_dir=tmp_path / "a"))
    assert (straight.global_step, straight.max_steps) == (100, 100)

    out = tmp_path / "b"
    stopped = run(TrainerSettings(**SCHEDULE, output_dir=out, stop_after_step=50))
    assert stopped.stopped_early and stopped.global_step == 50
    assert not (out / "final").exists() and (out / "checkpoint-50").is_dir()

    with devhub_testing.DevHub(tmp_path / "hub", users={USER: TOKEN}) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        repo_id = upload_like_the_uploader(api, out, 50, tmp_path / "staging")
        client = HfHubClient(hub.url, TOKEN)
        assert client.whoami() == USER and client.search_repos(USER, "-checkpoint-") == [repo_id]
        with pytest.raises(FileNotFoundError):
            client.download(repo_id, "no-such-file.bin", tmp_path / "probe")
        for entry in out.iterdir():
            if entry.name != RUN_INFO_FILENAME:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

        resumed = run(TrainerSettings(**SCHEDULE, output_dir=out, resume="hub",
                                      hf_endpoint=hub.url),
                      hub_token=TOKEN)

    assert resumed.outcome is Outcome.COMPLETED and resumed.global_step == 100
    assert resumed.run_id == stopped.run_id == read_run_info(out).run_id
    restored = read_marker(out, "checkpoint-50")
    assert restored is not None and restored.origin_repo == repo_id
    assert not (out / "checkpoint-50" / "README.md").exists()  # generated card not placed
    assert read_marker(out, "checkpoint-100").origin_repo is None

    a = load_file(tmp_path / "a" / "final" / ADAPTER)
    b = load_file(out / "final" / ADAPTER)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    # And the adapter really trained after the restore: it differs from checkpoint-50's.
    at_50 = load_file(out / "checkpoint-50" / ADAPTER)
    assert any(not torch.equal(at_50[name], b[name]) for name in a)
