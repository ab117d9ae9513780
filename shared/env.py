"""Environment variable names both containers read, so compose sets each of them once.

The settings models live in `trainer/` and `uploader/`; they take these names verbatim (not under
`TRAINER_`/`UPLOADER_`). The token is only ever read from the environment or a secret file, never
from a command-line flag, where `ps` would show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

HF_TOKEN = "HF_TOKEN"
HF_TOKEN_FILE = "HF_TOKEN_FILE"
HF_ENDPOINT = "HF_ENDPOINT"
HUB_NAMESPACE = "HUB_NAMESPACE"
HUB_REPO_PREFIX = "HUB_REPO_PREFIX"
WANDB_PROJECT = "WANDB_PROJECT"
WANDB_RUN_GROUP = "WANDB_RUN_GROUP"
WANDB_MODE = "WANDB_MODE"

DEFAULT_ENDPOINT = "https://huggingface.co"


class TokenError(ValueError):
    """The token is configured but cannot be read; the message names the setting and the fix."""


def read_token(environ: Mapping[str, str]) -> str | None:
    """The Hub token: `HF_TOKEN_FILE` (a secret file) wins over `HF_TOKEN`; None when neither.

    Re-read on every call so a rotated secret file takes effect without a restart.
    """
    token_file = environ.get(HF_TOKEN_FILE)
    if token_file:
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
    token = environ.get(HF_TOKEN, "").strip()
    return token or None
