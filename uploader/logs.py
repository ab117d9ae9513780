"""Logging setup: `key=value` fields after the message on a terminal, JSON lines for machines.

Structured fields travel in `extra=`; both formatters print every field that is not one of
LogRecord's own attributes. A JSON line carries `timestamp` (ISO-8601, UTC) and `severity` (the
names log shippers read) beside `time` (epoch seconds) and `level`.

Libraries log through the same single handler: huggingface_hub installs its own stderr handler
at import and also propagates to the root logger, so each of its warnings printed twice, once
raw. `setup_logging` removes the libraries' own stream handlers and lets their records
propagate, and the handler scrubs every record - ours and theirs - of registered secrets,
Hub tokens, bearer values, URL query strings (pre-signed upload URLs) and URL user info.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

# Loggers of the libraries the uploader runs; their records go through our handler only.
LIBRARY_LOGGERS = ("huggingface_hub", "hf_xet", "httpx", "httpcore", "httpx2", "httpcore2",
                   "urllib3", "watchdog", "filelock", "wandb")
WATCHDOG_LOGGER = "watchdog"
# Their chatter stays at WARNING unless the uploader's own level asks for less.
_QUIET_FLOOR = logging.WARNING
_URL_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]+@")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def scrub(text: str) -> str:
    """`uploader.retry.scrub` plus URL user info (`https://user:pass@host`)."""
    from uploader.retry import scrub as scrub_secrets

    return _URL_USERINFO_RE.sub("", scrub_secrets(text))


class ScrubFilter(logging.Filter):
    """Rewrites each record's message and string fields scrubbed, before any formatter runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        for key, value in fields_of(record).items():
            if isinstance(value, str):
                setattr(record, key, scrub(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={_short(v)}" for k, v in fields_of(record).items())
        return f"{line} {extras}" if extras else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {"timestamp": iso_time(record.created), "severity": record.levelname,
                   "time": record.created, "level": record.levelname, "logger": record.name,
                   "message": record.getMessage(), **fields_of(record)}
        if record.exc_text or record.exc_info:
            payload["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _short(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if " " in text or not text else text


def setup_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The output obeys --log-level even for loggers kept more verbose on purpose (watchdog).
    handler.setLevel(root.level)
    logging.captureWarnings(True)  # warnings.warn from libraries, as records of "py.warnings"
    # huggingface_hub adds its handler when its logging module is imported: import it now
    # (cheap) so that handler exists to be removed, whenever the library is imported later.
    with contextlib.suppress(ImportError):
        import huggingface_hub.utils.logging  # noqa: F401
    for name in LIBRARY_LOGGERS:
        adopt_library_logger(name, max(_QUIET_FLOOR, root.level))
    # watchdog says "queue overflowed" only as a WARNING, and the watcher turns that record
    # into a full rescan (`uploader.watch.OverflowAlarm`): it must reach the alarm at any level.
    logging.getLogger(WATCHDOG_LOGGER).setLevel(logging.WARNING)


def current_format() -> str:
    """"json" when the root logger writes JSON lines (set up by `setup_logging`), else "text"."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"


def adopt_library_logger(name: str, level: int) -> None:
    """Route a library's logger through the root handler only: drop its stream handlers."""
    logger = logging.getLogger(name)
    for old in list(logger.handlers):
        if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
            logger.removeHandler(old)
    logger.propagate = True
    logger.setLevel(level)


def quiet_progress_bars(fmt: str = "text") -> None:
    """Progress bars on a terminal only, and never between JSON lines: in a log they are noise."""
    if fmt == "json" or not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
