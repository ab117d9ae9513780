"""devhub answers without a Nagle stall: a response's body is never held back for the client's
delayed ACK of its headers (40 ms per request on Linux), which the Hub does not add either."""

import http.client
import socket
from pathlib import Path
from typing import Any

from devhub.app import App, AppConfig
from devhub.auth import User
from devhub.server import DevHubServer, serve


def test_every_connection_it_accepts_has_nagle_off(tmp_path: Path) -> None:
    app = App(AppConfig(data_dir=tmp_path, users=[User("alice", "hf_alice")]))
    server = serve(app, "127.0.0.1", 0)
    seen: list[int] = []
    finish = DevHubServer.finish_request

    def finish_and_look(request: socket.socket, address: Any) -> None:
        finish(server, request, address)  # the handler ran: its setup set the options
        seen.append(request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server.finish_request = finish_and_look  # type: ignore[method-assign]
    try:
        for _ in range(2):  # two connections, each with a JSON answer (headers, then body)
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            conn.request("GET", "/api/whoami-v2", headers={"Authorization": "Bearer hf_alice"})
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            conn.close()
    finally:
        server.stop()
    assert len(seen) == 2 and all(seen), seen
