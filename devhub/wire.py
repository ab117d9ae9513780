"""HTTP plumbing shared by the routes: request and response values, errors, and the body reader.

The body reader streams a request body (Content-Length or chunked) in bounded chunks, so no
upload is ever held in memory, and is where the `throttle` and `reset mid_body` faults act.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO, Protocol

READ_CHUNK = 1024 * 1024
MAX_LINE = 128 * 1024 * 1024
MAX_SMALL_BODY = 16 * 1024 * 1024


class HubError(Exception):
    """An error answered as the Hub does: status, JSON `{"error": ...}`, `X-Error-*` headers."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}


class ResetConnection(Exception):
    """Raised inside a handler to make the server reset the TCP connection (RST)."""


class StallConnection(Exception):
    """Raised inside a handler to make the server hold the connection without answering."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__("stall")
        self.seconds = seconds


class Waiter(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


class Throttle:
    """Paces a byte stream to `bytes_per_second`; sleeps are cut short when the server stops."""

    def __init__(self, bytes_per_second: int, stop: Waiter | None = None) -> None:
        self.rate = max(1, bytes_per_second)
        self.stop = stop or threading.Event()
        self.start = time.monotonic()
        self.sent = 0

    @property
    def chunk(self) -> int:
        """Bytes to move at once: small enough to pace smoothly."""
        return max(1, min(READ_CHUNK, self.rate // 10))

    def consume(self, nbytes: int) -> None:
        self.sent += nbytes
        due = self.start + self.sent / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


class BodyReader:
    """Reads a request body in bounded pieces, whatever its framing."""

    def __init__(self, rfile: BinaryIO, headers: Message) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length") or "0"
        if not self._chunked and not length.strip().isdigit():
            raise HubError(400, f"Invalid Content-Length {length!r}")
        self._remaining = 0 if self._chunked else int(length)
        self._chunk_left = 0
        self._eof = not self._chunked and self._remaining == 0
        self._buffer = bytearray()
        self.bytes_read = 0
        self.throttle: Throttle | None = None

    @property
    def declared_length(self) -> int | None:
        return None if self._chunked else self._remaining + self.bytes_read

    def _raw(self, limit: int) -> bytes:
        """Up to `limit` bytes straight from the socket; b"" at the end of the body."""
        if self._eof:
            return b""
        if self.throttle is not None:
            limit = min(limit, self.throttle.chunk)
        data = self._read_chunked(limit) if self._chunked else self._read_plain(limit)
        self.bytes_read += len(data)
        if self.throttle is not None and data:
            self.throttle.consume(len(data))
        return data

    def _read_plain(self, limit: int) -> bytes:
        data = self._rfile.read(min(limit, self._remaining))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._remaining -= len(data)
        self._eof = self._remaining == 0
        return data

    def _read_chunked(self, limit: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self._eof = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(limit, self._chunk_left))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)
        return data

    def read(self, limit: int = READ_CHUNK) -> bytes:
        """Up to `limit` bytes of the body; b"" once it is consumed."""
        if self._buffer:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            return data
        while not self._eof:
            data = self._raw(limit)
            if data:
                return data
        return b""

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        while data := self.read(size):
            yield data

    def readline(self, max_len: int = MAX_LINE) -> bytes:
        """One line including its newline (or the last bytes of the body)."""
        while b"\n" not in self._buffer and not self._eof:
            if len(self._buffer) > max_len:
                raise HubError(413, "Line too long in request body")
            self._buffer += self._raw(READ_CHUNK)
        cut = self._buffer.find(b"\n")
        end = len(self._buffer) if cut < 0 else cut + 1
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    def read_all(self, limit: int = MAX_SMALL_BODY) -> bytes:
        """The whole body, for small JSON or form payloads."""
        out = bytearray()
        for data in self.chunks():
            out += data
            if len(out) > limit:
                raise HubError(413, "Request body too large")
        return bytes(out)

    def json(self) -> Any:
        raw = self.read_all()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def drain(self) -> None:
        """Consume what is left, so the connection can serve its next request."""
        self._buffer.clear()
        for _ in self.chunks():
            pass

    @property
    def exhausted(self) -> bool:
        return self._eof and not self._buffer


@dataclass
class FileBody:
    """A response body streamed from a file on disk."""

    path: Path
    offset: int
    length: int


@dataclass
class StreamBody:
    """A response body produced piece by piece (a Xet file rebuilt from its xorbs)."""

    chunks: Iterator[bytes]
    length: int


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: FileBody | None = None
    stream: StreamBody | None = None

    @property
    def length(self) -> int:
        if self.stream is not None:
            return self.stream.length
        return self.file.length if self.file is not None else len(self.body)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload).encode()
    return Response(
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=body,
    )


def error_response(err: HubError) -> Response:
    headers = {"X-Error-Message": _header_safe(err.message), **err.headers}
    if err.error_code:
        headers["X-Error-Code"] = err.error_code
    return json_response({"error": err.message, **err.extra}, status=err.status, headers=headers)


def _header_safe(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")
