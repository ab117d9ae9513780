"""The HTTP server: one thread per connection, HTTP/1.1 keep-alive, faults, routing, request log.

Every response carries Content-Length and any unread request body is drained before answering,
so a kept-alive connection always starts its next request on a clean boundary.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .app import App, Request
from .auth import User
from .damage import apply_damage
from .faults import Action, FaultRule
from .ratelimit import Quota, RateLimiter, too_many_requests
from .reqlog import LogEntry
from .router import dispatch, is_admin
from .wire import (
    READ_CHUNK,
    BodyReader,
    HubError,
    ResetConnection,
    Response,
    StallConnection,
    StreamBody,
    Throttle,
    error_response,
)
from .xet import is_storage
from .xet_auth import XetToken, bearer

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 300


class DevHubServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], app: App, limiter: RateLimiter | None = None
    ) -> None:
        self.app = app
        self.limiter = limiter  # the --rate-limit mode; None: no limits
        self._reset_lock = threading.Lock()
        self._reset: set[int] = set()
        super().__init__(address, DevHubHandler)

    def mark_reset(self, sock: socket.socket) -> None:
        """The next close of this socket must be an RST, without a FIN first."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._reset_lock:
            self._reset.add(id(sock))

    def shutdown_request(self, request: Any) -> None:
        with self._reset_lock:
            reset = id(request) in self._reset
            self._reset.discard(id(request))
        if reset:
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def stop(self) -> None:
        self.app.stop.set()
        self.shutdown()
        self.server_close()
        self.app.reqlog.close()


class DevHubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devhub"
    # http.server writes the headers, then the body: with Nagle's algorithm on, the body waits
    # for the client's delayed ACK of the headers, 40 ms on Linux, so every JSON answer took
    # 44 ms on loopback (0.7 ms without). The Hub adds no such stall; latency a test wants is a
    # `delay` fault, not an accident of the server.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S
    server: DevHubServer

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _base_url(self) -> str:
        proto = self.headers.get("X-Forwarded-Proto", "http")
        host = self.headers.get("X-Forwarded-Host") or self.headers.get("Host")
        if not host:
            addr, port = self.server.server_address[:2]
            host = f"{addr}:{port}"
        return f"{proto}://{host}"

    def _handle(self) -> None:
        app = self.server.app
        started = time.monotonic()
        split = urlsplit(self.path)
        try:
            body = BodyReader(self.rfile, self.headers)
        except HubError as err:  # unreadable framing: answer, then drop the connection
            self.close_connection = True
            self._send(error_response(err), None)
            return
        user: User | None = None
        auth_error: HubError | None = None
        storage = is_storage(split.path)
        if storage:
            # The Xet storage service carries a Xet token, checked by its handlers, never the Hub
            # token; its user name (if the token is valid) still feeds fault rules and the log.
            user = _xet_user(app, self.headers.get("Authorization"))
        elif not is_admin(split.path):
            try:
                user = app.directory.authenticate(self.headers.get("Authorization"))
            except HubError as err:
                auth_error = err
        req = Request(
            self.command,
            split.path,
            parse_qs(split.query, keep_blank_values=True),
            self.headers,
            body,
            user,
            self._base_url(),
        )
        rule = None
        if not is_admin(split.path):
            rule = app.faults.match(req.method, req.path, user.name if user else None)
        status: int | None = None
        sent = 0
        try:
            response, out_throttle = self._respond(app, req, rule, auth_error)
            status = response.status
            sent = self._send(response, out_throttle)
        except ResetConnection:
            self.server.mark_reset(self.connection)
            self.close_connection = True
        except StallConnection as stall:
            self.close_connection = True
            app.stop.wait(stall.seconds)
        except (ConnectionError, TimeoutError) as err:
            log.info("connection lost during %s %s: %s", req.method, req.path, err)
            self.close_connection = True
        finally:
            app.reqlog.record(
                LogEntry(
                    time=time.time(),
                    method=req.method,
                    path=req.path,
                    status=status,
                    bytes=sent,
                    bytes_in=body.bytes_read,
                    duration=round(time.monotonic() - started, 4),
                    user=user.name if user else None,
                    fault={"id": rule.id, "action": rule.action.value} if rule else None,
                )
            )

    def _respond(
        self, app: App, req: Request, rule: FaultRule | None, auth_error: HubError | None
    ) -> tuple[Response, Throttle | None]:
        out_throttle: Throttle | None = None
        try:
            response = self._fault(app, req, rule) if rule is not None else None
            if response is None:
                if rule is not None and rule.action is Action.THROTTLE:
                    assert rule.bytes_per_second
                    req.body.throttle = Throttle(rule.bytes_per_second, app.stop)
                    out_throttle = Throttle(rule.bytes_per_second, app.stop)
                if auth_error is not None:
                    raise auth_error
                if self.server.limiter is not None:
                    self.server.limiter.check(
                        req.method, req.path, req.user.name if req.user else None
                    )
                response = dispatch(app, req)
                if rule is not None and rule.action is Action.DAMAGE:
                    self._damage(app, rule)
        except HubError as err:
            response = error_response(err)
        except (ResetConnection, StallConnection, ConnectionError, TimeoutError):
            raise
        except Exception:
            log.exception("internal error on %s %s", req.method, req.path)
            response = error_response(HubError(500, "Internal server error"))
        self._drain(req.body)
        return response, out_throttle

    def _fault(self, app: App, req: Request, rule: FaultRule) -> Response | None:
        """Act out a fault; a response to send instead of routing, or None to go on."""
        log.info("fault %d (%s) fires on %s %s", rule.id, rule.action, req.method, req.path)
        if rule.action is Action.DELAY:
            app.stop.wait(rule.seconds)
            return None
        if rule.action is Action.STATUS:
            headers = {}
            if rule.retry_after is not None:
                headers["Retry-After"] = str(rule.retry_after)
            if rule.ratelimit is not None:
                headers["RateLimit"] = f'"api";r=0;t={rule.ratelimit}'
                headers["RateLimit-Policy"] = '"fixed window";"api";q=1000;w=300'
            message = rule.message or f"devhub fault {rule.id}: status {rule.status}"
            return error_response(HubError(rule.status, message, headers=headers))
        if rule.action is Action.RATELIMIT:
            return self._rate_limited(req, rule)
        if rule.action is Action.RESET:
            if rule.when == "mid_body":
                self._read_some(req.body, rule.after_bytes)
            else:
                req.body.drain()
            raise ResetConnection()
        if rule.action is Action.STALL:
            req.body.drain()
            raise StallConnection(rule.seconds)
        return None  # throttle and damage act around the normal handling

    @staticmethod
    def _rate_limited(req: Request, rule: FaultRule) -> Response:
        assert rule.limit is not None and rule.window is not None
        err = too_many_requests(
            rule.resource or "api",
            f"requests matching fault {rule.id}",
            Quota(rule.limit, rule.window),
            rule.reset_in(req.user.name if req.user else None),
        )
        if rule.message:
            err.message = rule.message
        return error_response(err)

    @staticmethod
    def _read_some(body: BodyReader, after_bytes: int | None) -> None:
        declared = body.declared_length
        limit = after_bytes if after_bytes is not None else (declared or 0) // 2
        while body.bytes_read < limit and body.read(min(READ_CHUNK, limit - body.bytes_read)):
            pass

    @staticmethod
    def _damage(app: App, rule: FaultRule) -> None:
        try:
            apply_damage(app.storage, app.xet, rule)
        except HubError as err:
            log.warning("fault %d could not damage: %s", rule.id, err.message)

    def _drain(self, body: BodyReader) -> None:
        if not body.exhausted:
            try:
                body.drain()
            except (ValueError, HubError):
                self.close_connection = True

    def _send(self, response: Response, throttle: Throttle | None) -> int:
        """Write status, headers (always with Content-Length) and body; returns body bytes sent."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "X-Request-Id" not in response.headers:
            # As on the Hub, every answer names its request; the client quotes it in its errors.
            self.send_header("X-Request-Id", f"Root=1-{uuid.uuid4().hex}")
        self.send_header("Content-Length", str(response.length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return 0
        if response.stream is not None:
            return self._send_stream(response.stream, throttle)
        if response.file is None:
            return self._write(response.body, throttle)
        sent = 0
        with open(response.file.path, "rb") as src:
            src.seek(response.file.offset)
            left = response.file.length
            while left > 0:
                chunk = src.read(min(READ_CHUNK, left))
                if not chunk:
                    raise ConnectionError("stored file shrank while being sent")
                sent += self._write(chunk, throttle)
                left -= len(chunk)
        return sent

    def _send_stream(self, stream: StreamBody, throttle: Throttle | None) -> int:
        sent = 0
        try:
            for piece in stream.chunks:
                sent += self._write(piece[: stream.length - sent], throttle)
        except ConnectionError:
            raise  # the client went away
        except (OSError, ValueError) as err:  # unreadable or undecodable storage
            log.error("stream failed after %d bytes: %s", sent, err)
        if sent != stream.length:
            # The headers promised `length` bytes: cut the connection so the client sees it.
            raise ConnectionError(f"response stream ended after {sent} of {stream.length} bytes")
        return sent

    def _write(self, data: bytes, throttle: Throttle | None) -> int:
        step = throttle.chunk if throttle else len(data) or 1
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            self.wfile.write(piece)
            if throttle:
                throttle.consume(len(piece))
        return len(data)


def _xet_user(app: App, authorization: str | None) -> User | None:
    token = XetToken.decode(app.secret, bearer(authorization))
    if token is None or token.user is None:
        return None
    return app.directory.by_name(token.user)


def serve(app: App, host: str, port: int, limiter: RateLimiter | None = None) -> DevHubServer:
    """Bind (port 0 picks a free port) and serve in a background thread."""
    server = DevHubServer((host, port), app, limiter)
    thread = threading.Thread(target=server.serve_forever, name="devhub-serve", daemon=True)
    thread.start()
    return server
