"""What must never leave the machine, and what must never be uploaded at all."""

from __future__ import annotations

import os

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from shared.markers import build_marker, write_marker
from shared.run_info import Outcome, finish_run, start_run
from tests.e2e.conftest import OTHER_TOKEN, TOKEN, expected_repo, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, uploader_env

pytestmark = pytest.mark.e2e

SECRETS = [".env", "server.pem", "private.key", "id_rsa", "id_rsa.pub", ".netrc",
           ".git-credentials", "wandb-secret.txt"]


def watch_until_done(hub, out, tmp_path, *extra):
    proc = UploaderProcess(["watch", "--output-dir", str(out), "--exit-when-done",
                            "--log-level", "DEBUG", *extra],
                           uploader_env(hub.url, TOKEN), tmp_path / "uploader.log").start()
    assert proc.wait(120) == 0, proc.output()
    return proc.output()


def test_symlinks_out_and_denylisted_files_are_never_uploaded(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    folder = write_checkpoint(out, 50, run_id=info.run_id, marker=False)
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("private data outside the checkpoint")
    os.symlink(outside, folder / "leak.txt")
    os.symlink(folder / "adapter_config.json", folder / "config-link.json")  # inside: fine
    for name in SECRETS:
        (folder / name).write_text(f"secret in {name}")
    write_marker(out, build_marker(out, folder.name, run_id=info.run_id, step=50))
    finish_run(out, Outcome.COMPLETED)

    log = watch_until_done(hub, out, tmp_path, "--denylist", "wandb-secret*")

    repo_id = expected_repo(out, "checkpoint-50")
    remote = set(api.list_repo_files(repo_id))
    assert "adapter_model.safetensors" in remote and "config-link.json" in remote
    assert "leak.txt" not in remote
    assert not remote & set(SECRETS), remote & set(SECRETS)
    for name in ["leak.txt", *SECRETS]:
        assert name in log, f"no warning names {name}"
    assert api.repo_info(repo_id).private is True


def test_public_repos_need_an_explicit_setting(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    finish_run(out, Outcome.COMPLETED)
    watch_until_done(hub, out, tmp_path, "--no-private")
    repo_id = expected_repo(out, "checkpoint-50")
    assert api.repo_info(repo_id).private is False


def test_only_checkpoint_int_folders_and_final_are_uploaded(hub, api, tmp_path):
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    for name in ["checkpoint-abc", "checkpoint-5 (copy)", "checkpoint-007", "checkpoint--1",
                 "checkpoint-5.bak"]:
        (out / name).mkdir()
        (out / name / "trainer_state.json").write_text('{"global_step": 5}')
        (out / name / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    os.symlink(out / "checkpoint-50", out / "checkpoint-99")
    (out / "checkpoint-..").mkdir()
    finish_run(out, Outcome.COMPLETED)
    watch_until_done(hub, out, tmp_path)
    assert repos(api) == [expected_repo(out, "checkpoint-50")]


def test_other_users_private_repos_are_invisible(hub, api, tmp_path):
    from huggingface_hub import HfApi

    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    finish_run(out, Outcome.COMPLETED)
    watch_until_done(hub, out, tmp_path)
    repo_id = expected_repo(out, "checkpoint-50")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=OTHER_TOKEN).repo_info(repo_id)
