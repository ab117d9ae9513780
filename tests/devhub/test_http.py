"""HTTP/1.1 details: keep-alive survives unread bodies and errors, chunked bodies, lengths."""

import http.client
import json

from devhub.testing import DevHub

from .conftest import USERS


def test_keep_alive_across_errors_and_unread_bodies(hub: DevHub) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        body = json.dumps({"name": "x" * 5000}).encode()
        conn.request(
            "POST", "/api/repos/create", body=body, headers={"Authorization": "Bearer wrong"}
        )
        first = conn.getresponse()
        assert first.status == 401
        assert int(first.headers["Content-Length"]) == len(first.read())
        sock = conn.sock
        conn.request("GET", "/no/such/route")
        missing = conn.getresponse()
        assert missing.status == 404
        missing.read()
        conn.request("GET", "/api/whoami-v2", headers={"Authorization": f"Bearer {USERS['alice']}"})
        second = conn.getresponse()
        assert second.status == 200
        assert json.loads(second.read())["name"] == "alice"
        assert conn.sock is sock  # the same TCP connection served all three
    finally:
        conn.close()


def test_chunked_request_body(hub: DevHub) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        card = b"---\nbase_model: /local/path\n---\n"
        payload = json.dumps({"content": card.decode(), "repoType": "model"}).encode()
        parts = iter([payload[:10], payload[10:]])
        conn.request(
            "POST",
            "/api/validate-yaml",
            body=parts,
            encode_chunked=True,
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
        response = conn.getresponse()
        assert response.status == 400
        assert "base_model" in json.loads(response.read())["errors"][0]["message"]
        conn.request("GET", "/_devhub/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_head_has_length_and_no_body(hub: DevHub) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url, token=USERS["alice"])
    api.create_repo("alice/head-check", exist_ok=True)
    api.create_commit(
        "alice/head-check", [CommitOperationAdd("f.txt", b"12345")], commit_message="f"
    )
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        auth = {"Authorization": f"Bearer {USERS['alice']}"}
        conn.request("HEAD", "/alice/head-check/resolve/main/f.txt", headers=auth)
        head = conn.getresponse()
        assert head.status == 200 and head.headers["Content-Length"] == "5"
        assert head.read() == b""
        assert len(head.headers["X-Repo-Commit"]) == 40
        conn.request("GET", "/alice/head-check/resolve/main/f.txt", headers=auth)
        assert conn.getresponse().read() == b"12345"
    finally:
        conn.close()
