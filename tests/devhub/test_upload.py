"""Uploads and downloads through the real client: regular files, LFS (basic, multipart) and Xet."""

import base64
import hashlib
import json
import os
import threading
from pathlib import Path

import hf_xet
import httpx
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import BadRequestError, RemoteEntryNotFoundError

from devhub.testing import DevHub

from .conftest import CHUNK_SIZE, USERS, storage_calls, write_files

MB = 1024 * 1024


def git_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def local_hashes(root: Path) -> dict[str, tuple[str, str]]:
    """path -> (git sha1 of content, sha256 of content)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        out[path.relative_to(root).as_posix()] = (git_sha1(data), hashlib.sha256(data).hexdigest())
    return out


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    write_files(
        root,
        {
            "config.json": b'{"hidden_size": 8}\n',
            "notes/readme.txt": b"hello devhub\n",
            "notes/deep/empty.txt": b"",
            "tokenizer.json": json.dumps({"vocab": list(range(100))}).encode(),
            "weights-12mb.safetensors": os.urandom(12 * MB),
            "optimizer-64mb.pt": os.urandom(64 * MB),
        },
    )
    return root


UPLOAD_LOGS: dict[str, list[dict]] = {}


@pytest.fixture(scope="module")
def uploaded(hub: DevHub, big_folder: Path, transfer: str) -> str:
    """The folder uploaded once per transfer ("xet" or "lfs") by the real client."""
    api = HfApi(endpoint=hub.url, token=USERS["alice"])
    repo = f"alice/uploaded-folder-{transfer}"
    api.create_repo(repo, private=True)
    start = len(hub.log())
    api.upload_folder(repo_id=repo, folder_path=big_folder, commit_message="checkpoint 1")
    UPLOAD_LOGS[transfer] = hub.log()[start:]
    return repo


def test_lfs_upload_uses_basic_and_multipart_transfers(uploaded: str, transfer: str) -> None:
    log = UPLOAD_LOGS[transfer]
    lfs = [e for e in log if "/_lfs/" in e["path"]]
    if transfer == "xet":
        assert lfs == []
        return
    part_puts = [e for e in lfs if e["method"] == "PUT" and "/part/" in e["path"]]
    single_puts = [e for e in lfs if e["method"] == "PUT" and "/part/" not in e["path"]]
    assert len(part_puts) == -(-64 * MB // CHUNK_SIZE)
    assert [e["bytes_in"] for e in single_puts] == [12 * MB]
    assert all(e["status"] == 200 for e in lfs)
    assert storage_calls(log) == []


def test_xet_upload_goes_through_the_storage_service(uploaded: str, transfer: str) -> None:
    log = UPLOAD_LOGS[transfer]
    if transfer == "lfs":
        assert not [e for e in log if "xet" in e["path"]]
        return
    calls = storage_calls(log)
    xorbs = [e for e in calls if e["method"] == "POST" and "/v1/xorbs/" in e["path"]]
    shards = [e for e in calls if e["method"] == "POST" and e["path"].endswith("/v1/shards")]
    assert xorbs and all(e["status"] == 200 for e in xorbs)
    # The random 12 + 64 MB cannot shrink: at least that much went up as xorbs.
    assert sum(e["bytes_in"] for e in xorbs) >= 76 * MB
    assert shards and all(e["status"] == 200 for e in shards)
    tokens = [e for e in log if "/xet-write-token/" in e["path"]]
    assert tokens and all(e["status"] == 200 for e in tokens)


def test_snapshot_download_is_byte_identical(
    hub: DevHub, alice: HfApi, uploaded: str, big_folder: Path, tmp_path: Path, transfer: str
) -> None:
    start = len(hub.log())
    local = snapshot_download(uploaded, endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path)
    expected = local_hashes(big_folder)
    got = local_hashes(Path(local))
    got.pop(".gitattributes")
    assert got == expected
    reconstructions = [e for e in hub.log()[start:] if "/v1/reconstructions/" in e["path"]]
    assert len(reconstructions) == (2 if transfer == "xet" else 0)


def test_tree_and_paths_info_hashes_match_local(
    alice: HfApi, uploaded: str, big_folder: Path, transfer: str
) -> None:
    expected = local_hashes(big_folder)
    tree = {e.path: e for e in alice.list_repo_tree(uploaded, recursive=True) if hasattr(e, "size")}
    for path, (sha1, sha256) in expected.items():
        entry = tree[path]
        assert entry.size == (big_folder / path).stat().st_size
        if entry.lfs is not None:
            assert entry.lfs.sha256 == sha256
        else:
            assert entry.blob_id == sha1
    assert tree["weights-12mb.safetensors"].lfs is not None
    assert tree["optimizer-64mb.pt"].lfs is not None
    assert tree["config.json"].lfs is None
    infos = {e.path: e for e in alice.get_paths_info(uploaded, list(expected))}
    assert infos["optimizer-64mb.pt"].lfs.sha256 == expected["optimizer-64mb.pt"][1]
    assert infos["notes/readme.txt"].blob_id == expected["notes/readme.txt"][0]
    folders = [e.path for e in alice.get_paths_info(uploaded, ["notes", "missing"])]
    assert folders == ["notes"]
    for path in ("weights-12mb.safetensors", "optimizer-64mb.pt"):
        if transfer == "xet":
            [local] = hf_xet.hash_files([str(big_folder / path)])
            assert tree[path].xet_hash == infos[path].xet_hash == local.hash
        else:
            assert tree[path].xet_hash is None and infos[path].xet_hash is None
    assert tree["config.json"].xet_hash is None


def test_list_files_and_siblings(
    alice: HfApi, uploaded: str, big_folder: Path, transfer: str
) -> None:
    expected = set(local_hashes(big_folder)) | {".gitattributes"}
    assert set(alice.list_repo_files(uploaded)) == expected
    siblings = {s.rfilename: s for s in alice.model_info(uploaded).siblings or []}
    assert set(siblings) == expected
    sha256 = hashlib.sha256((big_folder / "weights-12mb.safetensors").read_bytes()).hexdigest()
    assert siblings["weights-12mb.safetensors"].lfs.sha256 == sha256
    top = {e.path for e in alice.list_repo_tree(uploaded)}
    assert "notes" in top and "notes/readme.txt" not in top


def test_unchanged_upload_posts_no_commit(
    hub: DevHub, alice: HfApi, uploaded: str, big_folder: Path, transfer: str
) -> None:
    before = alice.model_info(uploaded).sha
    info = alice.upload_folder(repo_id=uploaded, folder_path=big_folder, commit_message="again")
    assert info.oid == before
    assert len(alice.list_repo_commits(uploaded)) == 2


def test_hf_hub_download_and_range(
    hub: DevHub, uploaded: str, big_folder: Path, tmp_path: Path, transfer: str
) -> None:
    path = hf_hub_download(
        uploaded, "notes/readme.txt", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == b"hello devhub\n"
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            uploaded, "nope.txt", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path
        )
    weights = (big_folder / "weights-12mb.safetensors").read_bytes()
    url = f"{hub.url}/{uploaded}/resolve/main/weights-12mb.safetensors"
    for first, last in ((10, 19), (100_000, 3_000_000), (len(weights) - 5, len(weights) - 1)):
        headers = {"authorization": f"Bearer {USERS['alice']}", "range": f"bytes={first}-{last}"}
        part = httpx.get(url, headers=headers)
        assert part.status_code == 206
        assert part.content == weights[first : last + 1]


def test_xet_file_downloads_without_xet(
    hub: DevHub,
    alice: HfApi,
    uploaded: str,
    big_folder: Path,
    tmp_path: Path,
    transfer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client with Xet off reads a Xet file's bytes over plain HTTP, rebuilt by devhub."""
    head = httpx.head(
        f"{hub.url}/{uploaded}/resolve/main/optimizer-64mb.pt",
        headers={"authorization": f"Bearer {USERS['alice']}"},
    )
    assert head.headers["X-Linked-Size"] == str(64 * MB)
    if transfer == "xet":
        info = alice.get_paths_info(uploaded, ["optimizer-64mb.pt"])[0]
        assert head.headers["X-Xet-Hash"] == info.xet_hash
        assert head.links["xet-auth"]["url"].startswith(f"{hub.url}/api/models/{uploaded}/")
    else:
        assert "X-Xet-Hash" not in head.headers
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    start = len(hub.log())
    path = hf_hub_download(
        uploaded, "optimizer-64mb.pt", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path
    )
    expected = hashlib.sha256((big_folder / "optimizer-64mb.pt").read_bytes()).hexdigest()
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == expected
    assert storage_calls(hub.log()[start:]) == []


def test_commit_ops_delete_and_history(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    alice.create_commit(
        repo_id,
        [
            CommitOperationAdd("a/one.txt", b"one"),
            CommitOperationAdd("a/two.txt", b"two"),
            CommitOperationAdd("b.txt", b"b"),
        ],
        commit_message="add",
        commit_description="three files",
    )
    alice.create_commit(
        repo_id, [CommitOperationDelete("a/"), CommitOperationDelete("b.txt")], commit_message="rm"
    )
    assert alice.list_repo_files(repo_id) == [".gitattributes"]
    commits = alice.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["rm", "add", "initial commit"]
    assert commits[1].message == "three files"
    assert commits[0].authors == ["alice"]
    with pytest.raises(RemoteEntryNotFoundError):
        alice.create_commit(repo_id, [CommitOperationDelete("b.txt")], commit_message="again")


def test_preupload_modes(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    alice.create_commit(repo_id, [CommitOperationAdd("a.txt", b"text\n")], commit_message="a")
    files = [
        {"path": "a.txt", "sample": base64.b64encode(b"text\n").decode(), "size": 5},
        {"path": "big.txt", "sample": base64.b64encode(b"x" * 512).decode(), "size": 10 * MB},
        {"path": "small.bin", "sample": base64.b64encode(b"text").decode(), "size": 4},
        {"path": "blob.dat", "sample": base64.b64encode(b"\x00\x01\xff").decode(), "size": 3},
        {"path": "empty.bin", "sample": "", "size": 0},
    ]
    answer = httpx.post(
        f"{hub.url}/api/models/{repo_id}/preupload/main",
        json={"files": files},
        headers={"authorization": f"Bearer {USERS['alice']}"},
    ).json()["files"]
    modes = {f["path"]: f["uploadMode"] for f in answer}
    assert modes == {
        "a.txt": "regular",
        "big.txt": "lfs",
        "small.bin": "lfs",
        "blob.dat": "lfs",
        "empty.bin": "regular",
    }
    oids = {f["path"]: f["oid"] for f in answer}
    assert oids["a.txt"] == git_sha1(b"text\n")
    assert oids["big.txt"] is None
    assert all(f["shouldIgnore"] is False for f in answer)


def _raw_commit(hub: DevHub, token: str, repo: str, lines: list[dict]) -> httpx.Response:
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return httpx.post(
        f"{hub.url}/api/models/{repo}/commit/main",
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"},
    )


def test_lfs_objects_belong_to_the_repo_that_received_them(
    hub: DevHub, alice: HfApi, bob: HfApi
) -> None:
    secret = os.urandom(2048)
    sha256 = hashlib.sha256(secret).hexdigest()
    bob.create_repo("bob/secrets", private=True)
    bob.create_commit("bob/secrets", [CommitOperationAdd("secret.bin", secret)], commit_message="s")
    assert bob.get_paths_info("bob/secrets", ["secret.bin"])[0].lfs.sha256 == sha256
    alice.create_repo("alice/thief")
    header = {"key": "header", "value": {"summary": "steal"}}
    pointer = {
        "key": "lfsFile",
        "value": {"path": "stolen.bin", "algo": "sha256", "oid": sha256, "size": len(secret)},
    }
    refused = _raw_commit(hub, USERS["alice"], "alice/thief", [header, pointer])
    assert refused.status_code == 400
    assert "stolen.bin" not in alice.list_repo_files("alice/thief")
    batch = httpx.post(
        f"{hub.url}/alice/thief.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": sha256, "size": len(secret)}],
        },
        headers={"authorization": f"Bearer {USERS['alice']}"},
    )
    assert (
        "actions" in batch.json()["objects"][0]
    )  # not "already stored": alice must send the bytes
    # Uploading the bytes herself is how alice gets to commit that object.
    alice.create_commit(
        "alice/thief", [CommitOperationAdd("mine.bin", secret)], commit_message="own copy"
    )
    assert alice.get_paths_info("alice/thief", ["mine.bin"])[0].lfs.sha256 == sha256


def test_upload_with_wrong_content_is_refused(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    batch = httpx.post(
        f"{hub.url}/{repo_id}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": "b" * 64, "size": 4}],
        },
        headers={"authorization": f"Bearer {USERS['alice']}"},
    ).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert httpx.put(href, content=b"abcd").status_code == 400
    assert httpx.put(href[:-4] + "0000", content=b"abcd").status_code == 403  # forged ticket


def test_invalid_commit_paths_are_refused(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    header = {"key": "header", "value": {"summary": "bad"}}
    # As on the Hub: 422 for a path that starts by climbing up (either separator), else 400.
    refused = {"../escape.txt": 422, "..\\escape.txt": 422, ".git/config": 400, "a//b": 400}
    refused |= {"a/../b": 400}
    for path, status in refused.items():
        line = {"key": "file", "value": {"path": path, "content": "eA==", "encoding": "base64"}}
        assert _raw_commit(hub, USERS["alice"], repo_id, [header, line]).status_code == status
    with pytest.raises(BadRequestError):
        alice.create_commit(
            repo_id, [CommitOperationAdd("x.txt", b"x")], commit_message="x", create_pr=True
        )


def test_concurrent_commits_serialize(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            alice.create_commit(
                repo_id, [CommitOperationAdd(f"f{i}.txt", b"%d" % i)], commit_message=f"c{i}"
            )
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert set(alice.list_repo_files(repo_id)) == {".gitattributes"} | {
        f"f{i}.txt" for i in range(8)
    }
    assert len(alice.list_repo_commits(repo_id)) == 9


def test_commit_history_paginates(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    for i in range(55):
        _raw_commit(
            hub,
            USERS["alice"],
            repo_id,
            [
                {"key": "header", "value": {"summary": f"c{i}"}},
                {
                    "key": "file",
                    "value": {
                        "path": "n.txt",
                        "content": base64.b64encode(b"%d" % i).decode(),
                        "encoding": "base64",
                    },
                },
            ],
        ).raise_for_status()
    first_page = httpx.get(
        f"{hub.url}/api/models/{repo_id}/commits/main",
        headers={"authorization": f"Bearer {USERS['alice']}"},
    )
    assert "next" in first_page.links
    titles = [c.title for c in alice.list_repo_commits(repo_id)]
    assert titles == [f"c{i}" for i in reversed(range(55))] + ["initial commit"]
