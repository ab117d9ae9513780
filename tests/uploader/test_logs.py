"""Every log line, ours and the libraries', goes through one handler, once, scrubbed.

huggingface_hub adds its own stderr handler at import and also propagates to the root logger,
so without `setup_logging` taking it over each warning printed twice, once as raw text. Run in
a child process: `setup_logging` owns the root logger, which pytest's capture also uses.
"""

from __future__ import annotations

import json
import subprocess
import sys

TOKEN = "hf_LogsCanaryToken0123456789abcdefghij"
SIGNATURE = "c2lnbmF0dXJlLWNhbmFyeQ"
PASSWORD = "proxy-password-canary"

CHILD = f"""
import logging, warnings
from uploader.logs import setup_logging
from uploader.retry import register_secret
setup_logging("INFO", "FMT")
register_secret({TOKEN!r})
import huggingface_hub  # imported after the setup, as the verbs do
from huggingface_hub.utils import logging as hf_logging
hf_logging.get_logger("huggingface_hub.utils._http").warning(
    "HTTP Error 503 thrown while requesting PUT "
    "https://bucket.s3.example/xorbs/ab?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=900")
logging.getLogger("hf_xet").warning("token %s refused", {TOKEN!r})
logging.getLogger("httpx2").warning("via http://user:{PASSWORD}@proxy.example:3128/")
logging.getLogger("wandb").warning("Authorization: Bearer {TOKEN}")
warnings.warn("deprecated: pass token={TOKEN}", DeprecationWarning, stacklevel=1)
logging.getLogger("uploader.test").info("ours", extra={{"url": "https://h/x?sig={SIGNATURE}"}})
"""


def run_child(fmt: str) -> list[str]:
    done = subprocess.run([sys.executable, "-W", "always", "-c", CHILD.replace("FMT", fmt)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == ""
    return done.stderr.splitlines()


def test_json_every_library_line_once_as_json_and_scrubbed() -> None:
    lines = run_child("json")
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [r["logger"] for r in records] == [
        "huggingface_hub.utils._http", "hf_xet", "httpx2", "wandb", "py.warnings", "uploader.test"]
    for record in records:
        assert record["severity"] in ("WARNING", "INFO") and "T" in record["timestamp"]
    text = "\n".join(lines)
    for secret in (TOKEN, SIGNATURE, PASSWORD):
        assert secret not in text


def test_text_format_is_scrubbed_too() -> None:
    lines = run_child("text")
    assert sum("HTTP Error 503" in line for line in lines) == 1
    text = "\n".join(lines)
    for secret in (TOKEN, SIGNATURE, PASSWORD):
        assert secret not in text
