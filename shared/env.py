"""Environment variable names both containers read, so compose sets each of them once.

The settings models live in `trainer/` and `uploader/`; they take these names verbatim (not under
`TRAINER_`/`UPLOADER_`). The token is only ever read from the environment, a secret file or the
login `hf auth login` saved, never from a command-line flag, where `ps` would show it.

`.env` is read the same way by both programs (`apply_dotenv`, first thing in each CLI): every
variable in it that the process environment does not already set is added to the environment,
so `HF_TOKEN`, `HF_ENDPOINT`, `WANDB_*`, `TRAINER_*` and `UPLOADER_*` all work from it, and the
libraries that read the environment themselves (huggingface_hub, wandb) see the same values.
The environment wins over the file, as in python-dotenv and pydantic-settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

HF_TOKEN = "HF_TOKEN"
HF_TOKEN_FILE = "HF_TOKEN_FILE"
HF_ENDPOINT = "HF_ENDPOINT"
HUB_NAMESPACE = "HUB_NAMESPACE"
HUB_REPO_PREFIX = "HUB_REPO_PREFIX"
WANDB_PROJECT = "WANDB_PROJECT"
WANDB_RUN_GROUP = "WANDB_RUN_GROUP"
WANDB_MODE = "WANDB_MODE"
WANDB_DIR = "WANDB_DIR"
WANDB_ENTITY = "WANDB_ENTITY"
WANDB_RUN_ID = "WANDB_RUN_ID"
DOTENV_FILE = ".env"

DEFAULT_ENDPOINT = "https://huggingface.co"


# What a Hub token looks like (user and org tokens), for redacting one a user typed where it
# does not belong (a flag): the usage error that names the flag must not print the value.
HUB_TOKEN_PATTERN = re.compile(r"\b(hf|api_org)_[A-Za-z0-9]{8,}")
REDACTED = "***"


def redact_tokens(text: str) -> str:
    return HUB_TOKEN_PATTERN.sub(REDACTED, text)


class TokenError(ValueError):
    """The token is configured but cannot be read; the message names the setting and the fix."""


def read_token(environ: Mapping[str, str]) -> str | None:
    """The Hub token: `HF_TOKEN`, else `HF_TOKEN_FILE` (a secret file); None when neither.

    `HF_TOKEN` first, as huggingface_hub itself ranks it above every file. Re-read on every call
    so a rotated secret file takes effect without a restart.
    """
    token = environ.get(HF_TOKEN, "").strip()
    if token:
        return token
    token_file = environ.get(HF_TOKEN_FILE)
    if not token_file:
        return None
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise TokenError(
            f"{HF_TOKEN_FILE}={token_file} cannot be read ({exc.strerror or exc}); "
            "point it at a readable file holding the token"
        ) from None
    if not token:
        raise TokenError(f"{HF_TOKEN_FILE}={token_file} is empty; write the token into it")
    return token


def shadowed_token_file(environ: Mapping[str, str]) -> str | None:
    """The `HF_TOKEN_FILE` that `HF_TOKEN` overrides, so a caller can say so once; else None."""
    if environ.get(HF_TOKEN, "").strip() and environ.get(HF_TOKEN_FILE):
        return environ[HF_TOKEN_FILE]
    return None


# `KEY=value`, optionally after `export `; a value is '...' (literal), "..." (with \\n-style
# escapes) or bare (up to an inline ` #` comment), as python-dotenv reads the common cases.
_DOTENV_LINE = re.compile(
    r"""^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"""
    r"""(?:'(?P<single>[^']*)'|"(?P<double>(?:\\.|[^"\\])*)"|(?P<bare>.*?))"""
    r"""\s*(?:\s#.*)?$""")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a `.env` file sets; {} when there is none. Malformed lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            continue
        if match["single"] is not None:
            value = match["single"]
        elif match["double"] is not None:
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), match["double"])
        else:
            value = match["bare"] or ""
        values[match["key"]] = value
    return values


def apply_dotenv(environ: MutableMapping[str, str] | None = None,
                 path: Path | str = DOTENV_FILE) -> dict[str, str]:
    """Add `.env`'s variables that `environ` (default: the process's) lacks; returns those added.

    Called once at the start of each CLI, before any library reads the environment.
    """
    target = os.environ if environ is None else environ
    added = {k: v for k, v in read_dotenv(Path(path)).items() if k not in target}
    target.update(added)
    return added
