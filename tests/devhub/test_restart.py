"""Everything lives on disk: a restart (or a crash) keeps every repo, file and commit."""

import os
from pathlib import Path

import httpx
from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download

from devhub.testing import DevHub

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


def _cas_url(hub: DevHub, repo: str) -> str:
    response = httpx.get(
        f"{hub.url}/api/models/{repo}/xet-write-token/main",
        headers={"authorization": f"Bearer {USERS['alice']}"},
    )
    return response.json()["casUrl"]


def test_xet_storage_survives_restarts(tmp_path: Path, xet: None) -> None:
    big = os.urandom(3 * 1024 * 1024)
    more = os.urandom(1024 * 1024)
    with make_hub(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/xet-kept", private=True)
        api.create_commit(
            "alice/xet-kept", [CommitOperationAdd("big.safetensors", big)], commit_message="one"
        )
        before = _state(api)
        cas = _cas_url(hub, "alice/xet-kept")

        hub.restart()
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        assert _state(api) == before
        assert _cas_url(hub, "alice/xet-kept") == cas  # the nonce lives in the data dir
        local = snapshot_download(
            "alice/xet-kept", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path / "c1"
        )
        assert (Path(local) / "big.safetensors").read_bytes() == big
        # hf_xet's shard cache remembers the xorbs of `big`: it dedups against them and sends a
        # shard referencing them, which the restarted devhub still holds.
        start = len(hub.log())
        api.create_commit(
            "alice/xet-kept",
            [CommitOperationAdd("copy.safetensors", big), CommitOperationAdd("more.bin", more)],
            commit_message="two",
        )
        shards = [e for e in hub.log()[start:] if e["path"].endswith("/v1/shards")]
        assert shards and all(e["status"] == 200 for e in shards)

        hub.kill()
        hub.start()
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        local = snapshot_download(
            "alice/xet-kept", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path / "c2"
        )
        assert (Path(local) / "copy.safetensors").read_bytes() == big
        assert (Path(local) / "more.bin").read_bytes() == more
        port = hub.port

    # A fresh data dir on the same port is another storage: a new casUrl, so the client's shard
    # cache for the old one is never used against it, and the same upload works again.
    with make_hub(tmp_path / "fresh", port=port) as fresh:
        assert fresh.port == port
        api = HfApi(endpoint=fresh.url, token=USERS["alice"])
        api.create_repo("alice/xet-kept")
        assert _cas_url(fresh, "alice/xet-kept") != cas
        api.create_commit(
            "alice/xet-kept", [CommitOperationAdd("big.safetensors", big)], commit_message="one"
        )
        xorbs = [e for e in fresh.log() if "/v1/xorbs/" in e["path"]]
        assert xorbs and all(e["status"] == 200 for e in xorbs)
