"""Logging setup: `key=value` fields after the message on a terminal, JSON lines for machines.

Structured fields travel in `extra=`; both formatters print every field that is not one of
LogRecord's own attributes. Nothing here can print a secret the caller did not pass in, and
the CLI never passes the token.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={_short(v)}" for k, v in fields_of(record).items())
        return f"{line} {extras}" if extras else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {"time": record.created, "level": record.levelname, "logger": record.name,
                   "message": record.getMessage(), **fields_of(record)}
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def _short(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if " " in text or not text else text


def setup_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries' chatter stays at WARNING unless asked for.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3", "watchdog", "filelock",
                   "wandb"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def quiet_progress_bars() -> None:
    """Progress bars on a terminal only: in a container log they are noise."""
    if not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
