"""Every uploader setting, once: a CLI flag after its subcommand and `UPLOADER_<NAME>` in the env.

Names both containers share (`HF_ENDPOINT`, `HUB_NAMESPACE`, `HUB_REPO_PREFIX`) are read without the
prefix so compose sets them once. The token is never a setting here: it comes from `HF_TOKEN`,
`HF_TOKEN_FILE` or the saved `hf auth login` (a flag would show in `ps`). List settings take
`a,b` (as users write them in a shell or `.env`) as well as a JSON list. Configuration flows
one way: the CLI builds an `UploaderSettings`, checks it, and passes frozen values down; nothing
below the CLI reads the environment.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared import env as shared_env
from shared.layout import default_state_dir
from shared.naming import DEFAULT_PREFIX, RepoNameError, validate_part, validate_prefix
from uploader.priority import CpuScheduler, IoPriority

DEFAULT_OUTPUT_DIR = Path("./llama3-medical-ner-lora")


class Transfer(enum.StrEnum):
    AUTO = "auto"  # as huggingface_hub decides, falling back to LFS where a server has no Xet
    XET = "xet"  # the Hub's default transfer
    LFS = "lfs"  # plain git-LFS


class PruneCheck(enum.StrEnum):
    CONTENT = "content"  # the Hub's hashes derive from the bytes it received (Xet), or read back
    DEEP = "deep"  # download and hash every file before deleting the local copy


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ALL = ("watch", "backfill", "status", "verify", "best", "cleanup")
UPLOADING = ("watch", "backfill", "verify", "cleanup")


def _opt(default: Any, help: str, commands: tuple[str, ...] = ALL, alias: str | None = None,
         flag: str | None = None, **kw: Any) -> Any:
    extra: dict[str, Any] = {"commands": list(commands)}
    if flag:
        extra["flag"] = flag
    if alias:
        kw["validation_alias"] = AliasChoices(alias)
    return Field(default, description=help, json_schema_extra=extra, **kw)


class UploaderSettings(BaseSettings):
    """The uploader's configuration; see the README's table (generated from this model)."""

    model_config = SettingsConfigDict(
        # `.env` is applied to the environment by the CLI (`shared.env.apply_dotenv`), one reader
        # for every variable and both programs, so no `env_file` here.
        env_prefix="UPLOADER_", populate_by_name=True, extra="ignore",
        frozen=True,
    )

    output_dir: Path = _opt(DEFAULT_OUTPUT_DIR, "training output dir the trainer writes checkpoints into")
    state_dir: Path | None = _opt(None, "state dir on local disk (default <output_dir>/.uploader)")
    endpoint: str = _opt(shared_env.DEFAULT_ENDPOINT, "Hub endpoint URL", alias=shared_env.HF_ENDPOINT)
    namespace: str | None = _opt(None, "user or org owning the repos (default: the token's user)",
                                 alias=shared_env.HUB_NAMESPACE)
    repo_prefix: str = _opt(DEFAULT_PREFIX, "repo name prefix", alias=shared_env.HUB_REPO_PREFIX)
    log_format: LogFormat = _opt(LogFormat.TEXT, "text or json logs")
    log_level: str = _opt("INFO", "logging level")

    private: bool = _opt(True, "create repos private (public needs --no-private)", UPLOADING)
    transfer: Transfer = _opt(Transfer.AUTO, "auto (Xet unless HF_HUB_DISABLE_XET=1 or the server has "
                              "no Xet, then LFS), xet, or lfs", UPLOADING)
    settle_seconds: float = _opt(30.0, "quiet time before a folder without a marker counts as complete",
                                 ("watch", "backfill"))
    concurrency: int = _opt(1, "checkpoints uploaded at once (1 keeps step order)", ("watch", "backfill"))
    retry_attempts: int = _opt(6, "attempts per call within one round", UPLOADING)
    retry_max_wait: float = _opt(30.0, "longest backoff between attempts of a round (s)", UPLOADING)
    max_rate_limit_wait: float = _opt(3600.0, "longest announced rate-limit wait honoured (s)", UPLOADING)
    max_commits_per_hour: int = _opt(0, "client-side cap on commits per hour, e.g. this job's "
                                     "share of an account's limit (0: none)", UPLOADING)
    max_repos_per_hour: int = _opt(0, "client-side cap on repo creations per hour (0: none)",
                                   UPLOADING)
    any_rank: bool = _opt(False, "run even where RANK/NODE_RANK is not 0 (only if they are not "
                          "a training rank here)", UPLOADING)
    round_backoff: float = _opt(60.0, "first wait before a failed checkpoint's next round (s)",
                                ("watch", "backfill"))
    round_backoff_max: float = _opt(1800.0, "longest wait between rounds (s)", ("watch", "backfill"))
    connect_timeout: float = _opt(10.0, "HTTP connect timeout (s)", UPLOADING)
    read_timeout: float = _opt(120.0, "HTTP read timeout (s)", UPLOADING)
    denylist: Annotated[list[str], NoDecode] = _opt(
        [], "extra file patterns never uploaded (added to .env, *.pem, ...)", ("watch", "backfill"))
    wait_for_lock: bool = _opt(False, "wait for another uploader on this state dir instead of exiting",
                               ("watch", "backfill", "verify", "cleanup"))

    poll: bool = _opt(False, "polling observer (NFS, Docker Desktop bind mounts) instead of inotify",
                      ("watch",))
    poll_interval: float = _opt(5.0, "polling observer interval (s)", ("watch",))
    scan_interval: float = _opt(60.0, "full rescan interval; events are only hints (s)", ("watch",))
    drain_grace: float = _opt(25.0, "on SIGTERM, time to finish the upload in flight (s)", ("watch",))
    exit_when_done: bool = _opt(False, "exit once the run ended and everything is verified",
                                ("watch",))
    run_end_grace: float = _opt(60.0, "after the run ended, wait this long for folders still settling (s)",
                                ("watch",))
    prune: bool = _opt(False, "delete local checkpoints once verified (keeps --keep-last, the best "
                       "and the final; leave the trainer's save_total_limit unset)", ("watch",))
    keep_last: int = _opt(1, "newest checkpoints never pruned", ("watch",))
    prune_best: bool = _opt(False, "allow pruning the best checkpoint by eval_loss", ("watch",))
    free_space_warning: float = _opt(0.1, "warn when free space on the output dir falls below this "
                                     "fraction", ("watch",))

    prune_check: PruneCheck = _opt(PruneCheck.CONTENT, "what must pass before a local copy is "
                                   "pruned: content (the Hub's content hashes) or deep (download "
                                   "and hash every file)", ("watch",))
    max_staged_bytes: int = _opt(0, "most bytes held in staging by checkpoints the trainer "
                                 "already deleted (0: only the free-space floor applies)",
                                 ("watch", "backfill"))
    abandoned_after: float = _opt(3600.0, "an unmarked folder unchanged this long, in a run that "
                                  "never ended, is ignored with a warning instead of blocking "
                                  "pruning (s)", ("watch", "backfill"))
    auth_failure_grace: float = _opt(600.0, "with --exit-when-done: once the run ended and only "
                                     "auth failures remain, exit 1 after this long (s)",
                                     ("watch",))
    nice: int = _opt(10, "CPU niceness to run at, so training gets the CPU first (0: as "
                     "started; a higher niceness already set is kept)", UPLOADING)
    cpu_scheduler: CpuScheduler = _opt(CpuScheduler.NORMAL, "CPU scheduling: normal (at "
                                       "--nice) or idle (Linux SCHED_IDLE: only CPU time the "
                                       "trainer leaves; uploads wait while every core is busy)",
                                       UPLOADING)
    io_priority: IoPriority = _opt(IoPriority.LOW, "I/O priority: low (best-effort, lowest "
                                   "level), idle (only when the disk is otherwise idle), or "
                                   "normal", UPLOADING)
    yield_to_saves: float = _opt(30.0, "while the trainer is writing a checkpoint, hashing and "
                                 "new uploads wait up to this long (s; 0: never)", ("watch",))
    dry_run: bool = _opt(False, "print the plan, change nothing", ("backfill", "cleanup"))
    json_output: bool = _opt(False, "print JSON only", ("status", "best"), flag="--json")
    health: bool = _opt(False, "exit 0 when a watcher holds the state and ran recently", ("status",))
    health_max_age: float = _opt(120.0, "how recent the watcher's loop must be for --health (s)",
                                 ("status",))
    deep: bool = _opt(False, "download and hash every file instead of comparing remote hashes",
                      ("verify",))
    metric: str = _opt("eval_loss", "metric that ranks checkpoints (lower is better)",
                       ("best", "cleanup", "status", "watch"))
    keep_best: int = _opt(1, "cleanup: best checkpoint repos kept", ("cleanup",))
    keep_latest: int = _opt(1, "cleanup: newest checkpoint repos kept", ("cleanup",))
    yes: bool = _opt(False, "cleanup: really delete the planned repos", ("cleanup",))

    @field_validator("denylist", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL; use e.g. https://huggingface.co")
        return value.rstrip("/")

    @field_validator("repo_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            return validate_prefix(value)
        except RepoNameError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return validate_part(value, "namespace")
        except RepoNameError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("settle_seconds", "poll_interval", "scan_interval", "connect_timeout",
                     "read_timeout", "retry_max_wait", "round_backoff", "round_backoff_max")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be greater than 0, not {value}")
        return value

    @field_validator("drain_grace", "max_rate_limit_wait", "run_end_grace", "health_max_age",
                     "abandoned_after", "auth_failure_grace")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must not be negative, not {value}")
        return value

    @field_validator("keep_last", "keep_best", "keep_latest", "max_commits_per_hour",
                     "max_repos_per_hour", "max_staged_bytes")
    @classmethod
    def _count(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 or more, not {value}")
        return value

    @field_validator("concurrency", "retry_attempts")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, not {value}")
        return value

    @field_validator("nice")
    @classmethod
    def _niceness(cls, value: int) -> int:
        if not 0 <= value <= 19:
            raise ValueError(f"must be between 0 and 19 (Linux niceness), not {value}")
        return value

    @field_validator("free_space_warning")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"must be a fraction between 0 and 1, not {value}")
        return value

    @model_validator(mode="after")
    def _conflicts(self) -> UploaderSettings:
        if self.dry_run and self.yes:
            raise ValueError("--dry-run and --yes contradict each other; pass one of them")
        return self

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else default_state_dir(self.output_dir)

    @property
    def staging_dir(self) -> Path:
        # Always inside the output dir: hard links need the same filesystem as the checkpoints.
        return default_state_dir(self.output_dir) / "staging"

    def public_config(self) -> dict[str, Any]:
        """The settings as plain values, safe to log or send to W&B (this model holds no secret)."""
        return self.model_dump(mode="json")


def split_list(value: Any) -> Any:
    """`'*.bin,*.pt'` or `'["*.bin", "*.pt"]'` -> a list; a list of flags' values, flattened."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list ({exc.msg}); write a,b or [\"a\", \"b\"]") \
                    from None
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [item for part in value for item in
                (split_list(part) if isinstance(part, str) else [part])]
    return value


def commands_of(field_name: str) -> tuple[str, ...]:
    extra = UploaderSettings.model_fields[field_name].json_schema_extra
    assert isinstance(extra, dict)
    return tuple(extra["commands"])  # type: ignore[arg-type]


def flag_of(field_name: str) -> str:
    extra = UploaderSettings.model_fields[field_name].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra.get("flag") or "--" + field_name.replace("_", "-"))


def env_name(field_name: str) -> str:
    alias = UploaderSettings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1])
    return f"UPLOADER_{field_name.upper()}"
