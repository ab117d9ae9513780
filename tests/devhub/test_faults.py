"""Each fault action, as the real client experiences it."""

import hashlib
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, set_client_factory
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import parse_ratelimit_headers
from huggingface_hub.utils._http import default_client_factory

from devhub.testing import DevHub, DevHubError, wait_until

from .conftest import USERS, make_hub, write_files

KB = 1024


def _log_for(hub: DevHub, path_part: str) -> list[dict]:
    return [e for e in hub.log() if path_part in e["path"]]


def test_status_fault_on_a_non_retried_call(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    hub.add_faults(
        {
            "action": "status",
            "status": 500,
            "method": "POST",
            "path": "^/api/repos/create$",
            "times": 1,
        }
    )
    with pytest.raises(HfHubHTTPError) as err:
        alice.create_repo(repo_id)
    assert err.value.response.status_code == 500
    assert "devhub fault" in err.value.response.json()["error"]
    alice.create_repo(repo_id)  # the rule is spent
    rules = hub.faults()
    assert rules[0]["hits"] == 1 and rules[0]["matches"] == 1  # spent rules match nothing


def test_status_fault_is_retried_by_the_client(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    hub.add_faults({"action": "status", "status": 503, "path": "/preupload/", "times": 1})
    alice.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="a")
    calls = _log_for(hub, f"/{repo_id}/preupload/")
    assert [c["status"] for c in calls] == [503, 200]
    assert calls[0]["fault"]["action"] == "status"


def test_retry_after_is_honoured(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    hub.add_faults(
        {"action": "status", "status": 429, "retry_after": 2, "path": "/preupload/", "times": 1}
    )
    alice.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="a")
    first, second = _log_for(hub, f"/{repo_id}/preupload/")
    assert first["status"] == 429 and second["status"] == 200
    assert second["time"] - first["time"] >= 2.0  # the plain backoff would have waited 1 s


def test_ratelimit_header(hub: DevHub) -> None:
    hub.add_faults(
        {"action": "status", "status": 429, "ratelimit": 42, "path": "^/api/whoami-v2$", "times": 1}
    )
    response = httpx.get(
        f"{hub.url}/api/whoami-v2", headers={"authorization": f"Bearer {USERS['alice']}"}
    )
    assert response.status_code == 429
    assert response.headers["RateLimit"] == '"api";r=0;t=42'
    info = parse_ratelimit_headers(response.headers)
    assert info is not None and info.remaining == 0 and info.reset_in_seconds == 42


def test_reset_before_response_is_a_connection_error(hub: DevHub, alice: HfApi) -> None:
    hub.add_faults({"action": "reset", "path": "^/api/whoami-v2$", "times": 1})
    with pytest.raises(httpx2.TransportError):
        alice.whoami()
    assert alice.whoami()["name"] == "alice"
    entry = _log_for(hub, "/api/whoami-v2")[-2]
    assert entry["status"] is None and entry["fault"]["action"] == "reset"


def test_reset_mid_body(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    hub.add_faults(
        {
            "action": "reset",
            "when": "mid_body",
            "after_bytes": 10,
            "path": "^/api/repos/create$",
            "times": 1,
        }
    )
    with pytest.raises(httpx2.TransportError):
        alice.create_repo(repo_id)
    entry = _log_for(hub, "/api/repos/create")[-1]
    assert entry["bytes_in"] == 10 and entry["status"] is None
    assert not alice.repo_exists(repo_id)


def test_reset_mid_lfs_upload_is_retried(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    hub.add_faults(
        {
            "action": "reset",
            "when": "mid_body",
            "after_bytes": 64 * KB,
            "method": "PUT",
            "path": "^/_lfs/",
            "times": 1,
        }
    )
    data = os.urandom(512 * KB)
    alice.create_commit(repo_id, [CommitOperationAdd("w.bin", data)], commit_message="w")
    puts = [e for e in hub.log() if e["method"] == "PUT" and e["path"].startswith("/_lfs/")][-2:]
    assert [p["status"] for p in puts] == [None, 200]
    assert puts[0]["bytes_in"] == 64 * KB and puts[1]["bytes_in"] == len(data)


def test_reset_sends_rst(hub: DevHub) -> None:
    hub.add_faults({"action": "reset", "path": "^/rst-probe$", "times": 1})
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
        sock.sendall(b"GET /rst-probe HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


@pytest.fixture
def short_timeouts() -> Iterator[None]:
    set_client_factory(lambda: httpx2.Client(timeout=httpx2.Timeout(1.0), follow_redirects=True))
    try:
        yield
    finally:
        set_client_factory(default_client_factory)


def test_stall_times_out_a_client_with_a_read_timeout(
    hub: DevHub, alice: HfApi, short_timeouts: None
) -> None:
    hub.add_faults({"action": "stall", "path": "^/api/whoami-v2$", "times": 1})
    started = time.monotonic()
    with pytest.raises(httpx2.ReadTimeout):
        alice.whoami()
    assert time.monotonic() - started >= 0.9
    assert alice.whoami()["name"] == "alice"  # other requests are served meanwhile


def test_stall_does_not_block_shutdown(tmp_path: Path) -> None:
    with (
        make_hub(tmp_path / "hub", faults=[{"action": "stall", "path": "^/api/whoami-v2$"}]) as hub,
        socket.create_connection(("127.0.0.1", hub.port), timeout=10) as stalled,
    ):
        stalled.sendall(b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: hub.faults()[0]["hits"] == 1)
        started = time.monotonic()
        hub.stop(timeout=5)
        assert time.monotonic() - started < 5
        assert stalled.recv(1024) == b""  # closed without an answer


def test_delay(hub: DevHub, alice: HfApi) -> None:
    hub.add_faults({"action": "delay", "seconds": 0.6, "path": "^/api/whoami-v2$", "times": 1})
    started = time.monotonic()
    assert alice.whoami()["name"] == "alice"
    assert time.monotonic() - started >= 0.6


def test_throttle_download_and_upload(
    hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path
) -> None:
    rate = 200 * KB
    data = os.urandom(300 * KB)
    alice.create_repo(repo_id)
    hub.add_faults(
        {
            "action": "throttle",
            "bytes_per_second": rate,
            "method": "PUT",
            "path": "^/_lfs/",
            "times": 1,
        }
    )
    started = time.monotonic()
    alice.create_commit(repo_id, [CommitOperationAdd("t.bin", data)], commit_message="t")
    assert time.monotonic() - started >= len(data) / rate * 0.9
    hub.add_faults(
        {
            "action": "throttle",
            "bytes_per_second": rate,
            "method": "GET",
            "path": "/resolve/",
            "times": 1,
        }
    )
    started = time.monotonic()
    path = hf_hub_download(
        repo_id, "t.bin", endpoint=hub.url, token=alice.token, cache_dir=tmp_path
    )
    elapsed = time.monotonic() - started
    assert Path(path).read_bytes() == data
    assert len(data) / elapsed <= rate * 1.1


def _folder(tmp_path: Path) -> Path:
    return write_files(
        tmp_path / "ckpt",
        {"model.safetensors": os.urandom(4 * KB), "config.json": b"{}", "extra.txt": b"x"},
    )


def test_damage_drop_now(hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path) -> None:
    alice.create_repo(repo_id)
    alice.upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path), commit_message="c")
    hub.add_faults(
        {"action": "damage", "repo": repo_id, "file": "model.safetensors", "mode": "drop"}
    )
    assert (
        alice.get_paths_info(repo_id, ["model.safetensors", "config.json"])[0].path == "config.json"
    )
    assert "model.safetensors" not in {e.path for e in alice.list_repo_tree(repo_id)}
    # Uploading again repairs the remote copy.
    alice.upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path), commit_message="repair")
    assert "model.safetensors" in alice.list_repo_files(repo_id)


def test_damage_wrong_hash_now(
    hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path, transfer: str
) -> None:
    folder = _folder(tmp_path)
    local = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    alice.create_repo(repo_id)
    alice.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="c")
    xet_hash = alice.get_paths_info(repo_id, ["model.safetensors"])[0].xet_hash
    assert (xet_hash is not None) == (transfer == "xet")
    hub.add_faults(
        {"action": "damage", "repo": repo_id, "file": "*.safetensors", "mode": "wrong_hash"}
    )
    info = alice.get_paths_info(repo_id, ["model.safetensors"])[0]
    assert info.lfs.sha256 != local
    tree = {e.path: e for e in alice.list_repo_tree(repo_id)}
    assert tree["model.safetensors"].lfs.sha256 == info.lfs.sha256
    if transfer == "xet":
        assert info.xet_hash != xet_hash and tree["model.safetensors"].xet_hash == info.xet_hash
    sibling = {s.rfilename: s for s in alice.model_info(repo_id).siblings}["model.safetensors"]
    assert sibling.lfs.sha256 == info.lfs.sha256
    alice.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="repair")
    repaired = alice.get_paths_info(repo_id, ["model.safetensors"])[0]
    assert repaired.lfs.sha256 == local and repaired.xet_hash == xet_hash


def test_damage_the_commit_a_request_creates(
    hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path
) -> None:
    alice.create_repo(repo_id)
    hub.add_faults(
        {
            "action": "damage",
            "method": "POST",
            "path": f"^/api/models/{repo_id}/commit/",
            "repo": repo_id,
            "file": "config.json",
            "mode": "drop",
            "times": 1,
        }
    )
    commit = alice.upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path), commit_message="c")
    files = alice.list_repo_files(repo_id)
    assert "config.json" not in files and "model.safetensors" in files
    assert alice.model_info(repo_id).sha == commit.oid


def test_damage_of_a_missing_file_is_refused(hub: DevHub, repo_id: str) -> None:
    with pytest.raises(DevHubError, match="404"):
        hub.add_faults({"action": "damage", "repo": repo_id, "file": "x", "mode": "drop"})


def test_probability_replays_with_the_same_seed(hub: DevHub, alice: HfApi) -> None:
    def campaign() -> list[bool]:
        hub.clear_faults()
        hub.add_faults(
            {
                "action": "status",
                "status": 418,
                "path": "^/api/whoami-v2$",
                "probability": 0.5,
                "seed": 7,
            }
        )
        outcomes = []
        for _ in range(12):
            try:
                alice.whoami()
                outcomes.append(False)
            except HfHubHTTPError:
                outcomes.append(True)
        return outcomes

    draws = random.Random(7)
    expected = [draws.random() < 0.5 for _ in range(12)]
    assert campaign() == expected
    assert campaign() == expected
    assert 0 < sum(expected) < 12


def test_user_filter(hub: DevHub, alice: HfApi, bob: HfApi) -> None:
    hub.add_faults({"action": "status", "status": 503, "path": "^/api/whoami-v2$", "user": "bob"})
    assert alice.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError):
        bob.whoami()


def test_faults_file_and_log(tmp_path: Path) -> None:
    rules = [{"action": "status", "status": 502, "path": "^/api/whoami-v2$", "times": 1}]
    with make_hub(tmp_path / "hub", faults=rules) as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        with pytest.raises(HfHubHTTPError):
            api.whoami()
        api.whoami()
        first, second = _log_for(hub, "/api/whoami-v2")
        assert first["fault"] == {"id": 1, "action": "status"} and first["status"] == 502
        assert second["fault"] is None and second["status"] == 200 and second["bytes"] > 0
        assert {"method", "path", "status", "bytes", "duration", "fault"} <= set(first)
        assert (hub.data_dir / "requests.jsonl").read_text().count("/api/whoami-v2") == 2


def test_admin_api_needs_the_admin_token(hub: DevHub) -> None:
    assert httpx.get(f"{hub.url}/_devhub/faults").status_code == 401
    bad = httpx.post(
        f"{hub.url}/_devhub/faults",
        json={"action": "explode"},
        headers={"authorization": f"Bearer {hub.admin_token}"},
    )
    assert bad.status_code == 400
