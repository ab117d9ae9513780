"""The request log: one JSON line per request in the data dir, and the recent ones in memory."""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MEMORY_ENTRIES = 20_000


@dataclass(frozen=True)
class LogEntry:
    time: float
    method: str
    path: str
    status: int | None
    bytes: int
    bytes_in: int
    duration: float
    user: str | None
    fault: dict[str, Any] | None


class RequestLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._recent: collections.deque[LogEntry] = collections.deque(maxlen=MEMORY_ENTRIES)
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives with the server

    def record(self, entry: LogEntry) -> None:
        with self._lock:
            self._recent.append(entry)
            if not self._file.closed:
                self._file.write(json.dumps(asdict(entry)) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(e) for e in self._recent]

    def close(self) -> None:
        with self._lock:
            self._file.close()
