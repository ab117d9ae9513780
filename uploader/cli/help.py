"""What `--help` shows: option groups, defaults as users type them, choices, an example per verb.

Kept apart from the parser so the README's table (`uploader.cli.docs`) and `--help` format
defaults and boolean flags the same way. Imports only the settings module.
"""

from __future__ import annotations

import enum
from pathlib import PurePath
from typing import Any

from pydantic_core import PydanticUndefined

from uploader.settings import LOG_LEVELS, UploaderSettings

# One-shot switches of a single command: `--yes`, never `--no-yes`. The other booleans are
# also `--no-x`, so a flag can override a `UPLOADER_X=true` from the environment or `.env`.
SWITCHES = frozenset({"dry_run", "yes", "json_output", "health", "deep"})

# (title, fields) in the order `--help` lists them; a field in none lands in "other".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("locations", ("output_dir", "state_dir")),
    ("Hub connection", ("endpoint", "namespace", "repo_prefix", "private", "transfer",
                        "connect_timeout", "read_timeout")),
    ("logging", ("log_format", "log_level")),
    ("detection", ("settle_seconds", "poll", "poll_interval", "scan_interval", "denylist",
                   "abandoned_after")),
    ("retries and pacing", ("retry_attempts", "retry_max_wait", "max_rate_limit_wait",
                            "max_commits_per_hour", "max_repos_per_hour", "round_backoff",
                            "round_backoff_max", "auth_failure_grace")),
    ("running", ("concurrency", "drain_grace", "exit_when_done", "run_end_grace", "any_rank",
                 "wait_for_lock", "max_staged_bytes", "nice", "io_priority", "yield_to_saves")),
    ("pruning", ("prune", "keep_last", "prune_best", "free_space_warning", "prune_check")),
    ("selection", ("metric", "keep_best", "keep_latest")),
    ("output", ("dry_run", "yes", "json_output", "health", "health_max_age", "deep")),
)
GROUP_OF = {name: title for title, names in GROUPS for name in names}

EXAMPLES = {
    "watch": ["ckpt-uploader watch --output-dir ./my-run --exit-when-done",
              "ckpt-uploader watch --prune --keep-last 2 --log-format json"],
    "backfill": ["ckpt-uploader backfill --output-dir ./my-run --dry-run",
                 "ckpt-uploader backfill --output-dir ./my-run"],
    "status": ["ckpt-uploader status --output-dir ./my-run",
               "ckpt-uploader status --json | jq '.[] | select(.state == \"failed\")'"],
    "verify": ["ckpt-uploader verify --output-dir ./my-run --deep"],
    "best": ["ckpt-uploader best --output-dir ./my-run --metric eval_loss --json"],
    "cleanup": ["ckpt-uploader cleanup --keep-best 2 --keep-latest 1 --dry-run",
                "ckpt-uploader cleanup --keep-best 2 --keep-latest 1 --yes"],
}

# Settings that are not flags but that the uploader honours as their owners define them.
ENVIRONMENT = """environment (also read from ./.env; the process environment wins):
  HF_TOKEN, HF_TOKEN_FILE   the Hub token, HF_TOKEN first (a secret file is re-read before
                            each round);
                            without either, the login saved by `hf auth login` (HF_HOME,
                            HF_TOKEN_PATH)
  WANDB_MODE                online, offline or disabled (W&B is off without an API key
                            unless offline)
  WANDB_DIR, WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_RUN_ID
                            as W&B defines them; WANDB_RUN_ID (or the trainer's run info)
                            names the training run the uploader writes into"""


def plain_default(value: Any) -> str | None:
    """A default as one would type it (`./llama3-medical-ner-lora`, `text`, `30`); None: none."""
    if value is None or value is PydanticUndefined:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, PurePath):
        # Path("./x") prints as "x"; the "./" says it is relative to the working directory.
        return str(value) if value.is_absolute() else f"./{value}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else "[]"
    return str(value)


def choices_of(name: str) -> list[str] | None:
    annotation = UploaderSettings.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    if name == "log_level":
        return list(LOG_LEVELS)
    return None


def is_switch(name: str) -> bool:
    return name in SWITCHES


def epilog(verb: str) -> str:
    lines = ["examples:", *(f"  {example}" for example in EXAMPLES.get(verb, ()))]
    return "\n".join(lines) + "\n\n" + ENVIRONMENT
