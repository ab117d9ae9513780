"""Everything lives on disk: a restart (or a crash) keeps every repo, file and commit."""

import os
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download

from .conftest import USERS, make_hub


def _state(api: HfApi) -> dict:
    out = {}
    for model in api.list_models(author="alice"):
        info = api.model_info(model.id)
        out[model.id] = (
            info.sha,
            info.private,
            sorted(
                (s.rfilename, s.size, s.blob_id, s.lfs.sha256 if s.lfs else None)
                for s in info.siblings or []
            ),
            [c.commit_id for c in api.list_repo_commits(model.id)],
        )
    return out


def test_restart_and_crash_keep_everything(tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024)
    with make_hub(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/kept", private=True)
        api.create_repo("alice/kept-public")
        api.create_commit(
            "alice/kept",
            [
                CommitOperationAdd("small.txt", b"small"),
                CommitOperationAdd("big.safetensors", big),
            ],
            commit_message="one",
        )
        api.create_commit(
            "alice/kept", [CommitOperationAdd("small.txt", b"changed")], commit_message="two"
        )
        before = _state(api)
        port = hub.port

        hub.restart()
        assert hub.port == port
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        assert _state(api) == before
        # The repo still owns its LFS object: committing the same content needs no upload.
        api.create_commit(
            "alice/kept", [CommitOperationAdd("copy.safetensors", big)], commit_message="three"
        )
        assert not [e for e in hub.log() if e["path"].startswith("/_lfs/")]
        after_three = _state(api)

        hub.kill()
        hub.start()
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        assert _state(api) == after_three
        local = snapshot_download(
            "alice/kept", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path / "c"
        )
        assert (Path(local) / "big.safetensors").read_bytes() == big
        assert (Path(local) / "small.txt").read_bytes() == b"changed"
