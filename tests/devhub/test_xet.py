"""Xet: token endpoints, the storage service's checks, commits of Xet files, and `--no-xet`."""

import hashlib
import os
import time
from pathlib import Path

import hf_xet
import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download

from devhub.testing import DevHub, wait_until
from devhub.xet import STORAGE_PREFIX
from devhub.xet_format import chunk_hash, file_hash, hash_hex

from . import xet_build
from .conftest import READ_TOKENS, USERS, make_hub, storage_calls

KB = 1024


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def xet_token(hub: DevHub, repo: str, kind: str = "write", token: str = USERS["alice"]) -> dict:
    response = httpx.get(f"{hub.url}/api/models/{repo}/xet-{kind}-token/main", headers=_auth(token))
    response.raise_for_status()
    return response.json()


def _post(grant: dict, route: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{grant['casUrl']}{route}", content=body, headers=_auth(grant["accessToken"])
    )


def upload_built(grant: dict, x: xet_build.BuiltXorb, sha256: str | None = None) -> str:
    """Upload a hand-built xorb and a shard naming it as one whole file; its file hash."""
    assert _post(grant, f"/v1/xorbs/default/{x.hash}", x.body).status_code == 200
    fh = xet_build.whole_file_hash(x)
    body = xet_build.shard([(fh, [(x.hash, x.size, 0, len(x.chunks))], sha256)], [x])
    assert _post(grant, "/v1/shards", body).status_code == 200
    return fh


def _commit(hub: DevHub, repo: str, sha256: str, size: int, path: str = "w.bin") -> httpx.Response:
    lines = [
        b'{"key": "header", "value": {"summary": "xet"}}',
        b'{"key": "lfsFile", "value": {"path": "%s", "algo": "sha256", "oid": "%s", "size": %d}}'
        % (path.encode(), sha256.encode(), size),
    ]
    return httpx.post(
        f"{hub.url}/api/models/{repo}/commit/main",
        content=b"\n".join(lines) + b"\n",
        headers={**_auth(USERS["alice"]), "content-type": "application/x-ndjson"},
    )


# ---- token endpoints -----------------------------------------------------------------------


def test_token_endpoints_answer_json_and_headers(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id, private=True)
    for kind in ("write", "read"):
        response = httpx.get(
            f"{hub.url}/api/models/{repo_id}/xet-{kind}-token/main", headers=_auth(USERS["alice"])
        )
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"accessToken", "exp", "casUrl"}
        assert response.headers["X-Xet-Access-Token"] == body["accessToken"]
        assert response.headers["X-Xet-Cas-Url"] == body["casUrl"]
        assert response.headers["X-Xet-Token-Expiration"] == str(body["exp"])
        assert body["casUrl"].startswith(f"{hub.url}{STORAGE_PREFIX}/")
        assert 3000 < body["exp"] - time.time() <= 3600
    # Built from the request's Host, like every URL devhub hands out.
    proxied = httpx.get(
        f"{hub.url}/api/models/{repo_id}/xet-read-token/main",
        headers={**_auth(USERS["alice"]), "host": "hub.example:8443"},
    )
    assert proxied.json()["casUrl"].startswith(f"http://hub.example:8443{STORAGE_PREFIX}/")


def test_token_endpoints_check_the_hub_token(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id, private=True)
    public = f"{repo_id}-public"
    alice.create_repo(public)

    def status(repo: str, kind: str, token: str | None) -> int:
        headers = _auth(token) if token else {}
        url = f"{hub.url}/api/models/{repo}/xet-{kind}-token/main"
        return httpx.get(url, headers=headers).status_code

    assert status(repo_id, "write", "hf_nobody") == 401
    assert status(repo_id, "read", "hf_nobody") == 401
    assert status(repo_id, "write", READ_TOKENS["alice"]) == 403  # read role
    assert status(repo_id, "read", READ_TOKENS["alice"]) == 200
    assert status(repo_id, "write", USERS["bob"]) == 404  # private: not even visible
    assert status(public, "write", USERS["bob"]) == 403  # visible, not bob's namespace
    assert status(public, "read", USERS["bob"]) == 200
    assert status(public, "read", None) == 200
    assert status(public, "write", None) == 401


# ---- storage: tokens ------------------------------------------------------------------------


def test_storage_requests_need_the_xet_token(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    write = xet_token(hub, repo_id)
    read = xet_token(hub, repo_id, "read")
    x = xet_build.xorb([os.urandom(3000)])
    route = f"/v1/xorbs/default/{x.hash}"
    cas = write["casUrl"]
    assert httpx.post(f"{cas}{route}", content=x.body).status_code == 401
    # The Hub token is not a storage token (and storage skips Hub authentication).
    hub_token = httpx.post(f"{cas}{route}", content=x.body, headers=_auth(USERS["alice"]))
    assert hub_token.status_code == 401
    forged = write["accessToken"][:-4] + "0000"
    assert httpx.post(f"{cas}{route}", content=x.body, headers=_auth(forged)).status_code == 401
    assert _post(read, route, x.body).status_code == 403  # a read token cannot upload
    assert _post(read, "/v1/shards", xet_build.shard([])).status_code == 403
    assert _post(write, route, x.body).json() == {"was_inserted": True}
    dedup = httpx.get(f"{cas}/v1/chunks/default/{'0' * 64}", headers=_auth(read["accessToken"]))
    assert dedup.status_code == 404
    other = httpx.post(
        f"{hub.url}{STORAGE_PREFIX}/0123456789abcdef{route}",
        content=x.body,
        headers=_auth(write["accessToken"]),
    )
    assert other.status_code == 404  # another data dir's casUrl


def test_xet_tokens_expire(tmp_path: Path) -> None:
    with make_hub(tmp_path / "hub", xet_token_ttl=1) as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/short")
        grant = xet_token(hub, "alice/short")
        assert grant["exp"] - time.time() <= 1
        url = f"{grant['casUrl']}/v1/chunks/default/{'0' * 64}"
        headers = _auth(grant["accessToken"])
        first = httpx.get(url, headers=headers).status_code
        wait_until(lambda: httpx.get(url, headers=headers).status_code == 401, timeout=5)
        assert first in (404, 401)  # 404 (unknown chunk) unless the second already ran out
        assert "expired" in httpx.get(url, headers=headers).json()["error"]


def test_tokens_are_scoped_to_their_repo(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    """A file uploaded with repo A's token can be committed in A, not in B."""
    other = f"{repo_id}-other"
    alice.create_repo(repo_id)
    alice.create_repo(other)
    x = xet_build.xorb([os.urandom(5000), os.urandom(7000)])
    sha256 = xet_build.sha256_of(x)
    fh = upload_built(xet_token(hub, repo_id), x, sha256)
    assert _commit(hub, other, sha256, x.size).status_code == 400
    read_other = xet_token(hub, other, "read")
    recon = httpx.get(
        f"{read_other['casUrl']}/v1/reconstructions/{fh}", headers=_auth(read_other["accessToken"])
    )
    assert recon.status_code == 404
    assert _commit(hub, repo_id, sha256, x.size).status_code == 200
    [info] = alice.get_paths_info(repo_id, ["w.bin"])
    assert info.xet_hash == fh and info.lfs.sha256 == sha256 and info.size == x.size


# ---- storage: xorbs and shards ----------------------------------------------------------------


def test_xorbs_are_verified(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    grant = xet_token(hub, repo_id)
    text = b"0123456789abcdef" * 4000
    x = xet_build.xorb([os.urandom(4000), text, text[:-3] + b"xyz"], schemes=[0, 1, 2])
    route = f"/v1/xorbs/default/{x.hash}"
    assert _post(grant, route, x.body).json() == {"was_inserted": True}
    assert _post(grant, route, x.body).json() == {"was_inserted": False}
    other = xet_build.xorb([os.urandom(100)])
    wrong = _post(grant, f"/v1/xorbs/default/{other.hash}", x.body)
    assert wrong.status_code == 400 and "hashes to" in wrong.json()["error"]
    assert _post(grant, route, x.body[:-10]).status_code == 400  # truncated
    garbage = xet_build.xorb([b"x" * 100])
    assert _post(grant, f"/v1/xorbs/default/{garbage.hash}", b"\x07" * 100).status_code == 400
    # The file made of it reads back through the plain resolve (decompressing each scheme).
    sha256 = xet_build.sha256_of(x)
    upload_built(grant, x, sha256)
    assert _commit(hub, repo_id, sha256, x.size).status_code == 200
    got = httpx.get(f"{hub.url}/{repo_id}/resolve/main/w.bin", headers=_auth(USERS["alice"]))
    assert got.content == b"".join(x.chunks)


def test_shards_are_checked(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    grant = xet_token(hub, repo_id)
    x = xet_build.xorb([os.urandom(6000), os.urandom(2000)])
    fh = xet_build.whole_file_hash(x)
    whole = [(fh, [(x.hash, x.size, 0, 2)], xet_build.sha256_of(x))]
    unknown = _post(grant, "/v1/shards", xet_build.shard(whole, [x]))
    assert unknown.status_code == 400 and "never uploaded" in unknown.json()["error"]
    assert _post(grant, "/v1/shards", xet_build.shard(whole)).status_code == 400
    assert _post(grant, f"/v1/xorbs/default/{x.hash}", x.body).status_code == 200
    lying = [(fh, [(x.hash, x.size, 0, 1)], None)]  # sizes that do not add up
    assert _post(grant, "/v1/shards", xet_build.shard(lying)).status_code == 400
    wrong_hash = [("ab" * 32, [(x.hash, x.size, 0, 2)], None)]
    assert _post(grant, "/v1/shards", xet_build.shard(wrong_hash)).status_code == 400
    assert _post(grant, "/v1/shards", b"not a shard").status_code == 400
    assert _post(grant, "/v2/shards", xet_build.shard(whole, [x])).status_code == 404
    assert _post(grant, "/v1/shards", xet_build.shard(whole, [x])).json() == {"result": 1}
    assert _post(grant, "/v1/shards", xet_build.shard(whole, [x])).json() == {"result": 0}


def test_commit_needs_a_sha256_this_repo_received(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    x = xet_build.xorb([os.urandom(3000)])
    refused = _commit(hub, repo_id, hashlib.sha256(b"".join(x.chunks)).hexdigest(), x.size)
    assert refused.status_code == 400
    claimed = "5" * 64  # what the shard declares is what counts, as on the Hub
    upload_built(xet_token(hub, repo_id), x, claimed)
    assert _commit(hub, repo_id, claimed, x.size + 1).status_code == 400  # size must match
    assert _commit(hub, repo_id, claimed, x.size).status_code == 200
    assert alice.get_paths_info(repo_id, ["w.bin"])[0].lfs.sha256 == claimed


def test_declared_sha256_is_taken_without_rehash(
    hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path, xet: None
) -> None:
    """hf_xet stores a caller-supplied sha256 unchecked, and devhub commits it as the Hub does."""
    alice.create_repo(repo_id)
    data = os.urandom(300 * KB)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    op = CommitOperationAdd("model.safetensors", path)
    op.upload_info.sha256 = b"\x11" * 32
    alice.create_commit(repo_id, [op], commit_message="claimed sha256")
    [info] = alice.get_paths_info(repo_id, ["model.safetensors"])
    assert info.lfs.sha256 == "11" * 32
    assert info.xet_hash == hf_xet.hash_files([str(path)])[0].hash  # content-derived
    got = hf_hub_download(
        repo_id, "model.safetensors", endpoint=hub.url, token=USERS["alice"], cache_dir=tmp_path
    )
    assert Path(got).read_bytes() == data


# ---- reconstruction and xorb reads ------------------------------------------------------------


def test_reconstruction_and_signed_reads(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    chunks = [os.urandom(n) for n in (5000, 3000, 4000)]
    first, second = xet_build.xorb(chunks[:2]), xet_build.xorb(chunks[2:])
    grant = xet_token(hub, repo_id)
    for x in (first, second):
        assert _post(grant, f"/v1/xorbs/default/{x.hash}", x.body).status_code == 200
    fh = hash_hex(file_hash([(chunk_hash(c), len(c)) for c in chunks]))
    terms = [(first.hash, 8000, 0, 2), (second.hash, 4000, 0, 1)]
    assert _post(grant, "/v1/shards", xet_build.shard([(fh, terms, None)])).status_code == 200
    read = xet_token(hub, repo_id, "read")
    url = f"{read['casUrl']}/v1/reconstructions/{fh}"
    whole = httpx.get(url, headers=_auth(read["accessToken"])).json()
    assert [t["hash"] for t in whole["terms"]] == [first.hash, second.hash]
    assert whole["offset_into_first_range"] == 0
    part = httpx.get(url, headers={**_auth(read["accessToken"]), "range": "bytes=9000-9999"})
    assert part.json()["offset_into_first_range"] == 1000
    assert [t["hash"] for t in part.json()["terms"]] == [second.hash]
    beyond = httpx.get(url, headers={**_auth(read["accessToken"]), "range": "bytes=12000-12001"})
    assert beyond.status_code == 416
    [fetch] = whole["fetch_info"][first.hash]
    assert fetch["range"] == {"start": 0, "end": 2}
    span = fetch["url_range"]
    # Like a presigned URL: no Authorization, a Range, and only with the right signature.
    got = httpx.get(fetch["url"], headers={"range": f"bytes={span['start']}-{span['end']}"})
    assert got.status_code == 206 and got.content == first.body
    assert httpx.get(fetch["url"][:-4] + "0000").status_code == 403


# ---- --no-xet ----------------------------------------------------------------------------------


def test_no_xet_is_an_lfs_only_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_hub(tmp_path / "hub", xet=False) as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/plain")
        for kind in ("write", "read"):
            url = f"{hub.url}/api/models/alice/plain/xet-{kind}-token/main"
            assert httpx.get(url, headers=_auth(USERS["alice"])).status_code == 404
        data = os.urandom(200 * KB)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        api.create_commit("alice/plain", [CommitOperationAdd("w.bin", data)], commit_message="lfs")
        assert api.get_paths_info("alice/plain", ["w.bin"])[0].xet_hash is None
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
        # As against a Hub-compatible server without Xet: no fallback, a ConnectionError.
        with pytest.raises(ConnectionError, match="404"):
            api.create_commit(
                "alice/plain", [CommitOperationAdd("x.bin", os.urandom(KB))], commit_message="xet"
            )
        assert storage_calls(hub.log()) == []
        assert "x.bin" not in api.list_repo_files("alice/plain")
