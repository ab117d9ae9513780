"""When W&B is on, where the run goes, and the uploader's settings with every secret removed.

The only module of `tracking` that looks at the environment, and only at what the CLI hands it.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import env as shared_env
from uploader.retry import scrub as scrub_text

if TYPE_CHECKING:
    from uploader.settings import UploaderSettings

log = logging.getLogger(__name__)

WANDB_API_KEY = "WANDB_API_KEY"
RUN_INFO_WAIT = 10.0  # the trainer writes run info at its start; the uploader may start first
INIT_TIMEOUT = 60.0
FINISH_TIMEOUT = 10.0
# wandb-core writes the run file every 15 s by default, and a kill -9 loses what it buffered;
# a sidecar logs a few rows per checkpoint, so flushing often costs nothing.
FLUSH_INTERVAL = 2.0

# Keys dropped from the config: anything named like a credential.
_SECRET_KEY_RE = re.compile(r"(?i)(key|token|secret|passw(or)?d|credential|auth)")
_URL_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]+@")
_REDACTED = "***"


class Mode(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


@dataclass(frozen=True)
class TrackingConfig:
    """What the W&B worker needs; `tracking_config` builds it from settings and the env."""

    mode: Mode
    state_dir: Path
    output_dir: Path | None = None  # where the trainer's run info appears
    project: str | None = None  # WANDB_PROJECT: wins over the run info
    group: str | None = None  # WANDB_RUN_GROUP: wins over the run info
    entity: str | None = None  # WANDB_ENTITY
    wandb_dir: Path | None = None  # WANDB_DIR: where W&B puts `wandb/` (default: the state dir)
    train_run_id: str | None = None  # WANDB_RUN_ID: the training run's W&B id (else run info)
    wait_for_run_info: float = RUN_INFO_WAIT
    config: Mapping[str, Any] = field(default_factory=dict)  # scrubbed again before init
    secrets: tuple[str, ...] = field(default=(), repr=False)  # exact values never written
    system_metrics: bool = True
    flush_interval: float = FLUSH_INTERVAL
    init_timeout: float = INIT_TIMEOUT
    finish_timeout: float = FINISH_TIMEOUT

    @property
    def base_dir(self) -> Path:
        """What `wandb.init(dir=...)` gets: `WANDB_DIR` as W&B defines it, else the state dir."""
        return self.wandb_dir if self.wandb_dir is not None else self.state_dir

    @property
    def runs_dir(self) -> Path:
        """Where wandb puts its run folders (`offline-run-*` or `run-*`)."""
        return self.base_dir / "wandb"


def wandb_mode(environ: Mapping[str, str]) -> Mode:
    """`WANDB_MODE` as W&B reads it; online without an API key means W&B stays off."""
    raw = environ.get(shared_env.WANDB_MODE, "").strip().lower()
    if raw == "disabled":
        return Mode.DISABLED
    if raw in ("offline", "dryrun"):
        return Mode.OFFLINE
    if raw not in ("", "online", "run"):
        log.warning("unknown WANDB_MODE; W&B off", extra={"wandb_mode": raw})
        return Mode.DISABLED
    if not environ.get(WANDB_API_KEY, "").strip() and not _netrc_has_key():
        log.info("W&B off: no WANDB_API_KEY (WANDB_MODE=offline keeps runs locally)")
        return Mode.DISABLED
    return Mode.ONLINE


def _netrc_has_key() -> bool:
    """`wandb login` keeps the key in ~/.netrc rather than in the environment."""
    import netrc

    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def tracking_config(environ: Mapping[str, str], settings: UploaderSettings,
                    **overrides: Any) -> TrackingConfig:
    """The config from checked settings and the environment; `overrides` set fields directly."""
    secrets = tuple(v for v in (environ.get(shared_env.HF_TOKEN), environ.get(WANDB_API_KEY),
                                _token_from_file(environ)) if v)
    values: dict[str, Any] = {
        "mode": wandb_mode(environ),
        "state_dir": settings.resolved_state_dir,
        "output_dir": settings.output_dir,
        "project": environ.get(shared_env.WANDB_PROJECT) or None,
        "group": environ.get(shared_env.WANDB_RUN_GROUP) or None,
        "entity": environ.get(shared_env.WANDB_ENTITY) or None,
        "wandb_dir": Path(environ[shared_env.WANDB_DIR]).expanduser()
        if environ.get(shared_env.WANDB_DIR) else None,
        "train_run_id": environ.get(shared_env.WANDB_RUN_ID) or None,
        "config": scrub_config(settings.public_config(), secrets),
        "secrets": secrets,
    }
    return TrackingConfig(**(values | overrides))


def _token_from_file(environ: Mapping[str, str]) -> str | None:
    try:
        return shared_env.read_token(environ)
    except shared_env.TokenError:
        return None  # the CLI reports it; here it would only widen what is scrubbed


def scrub_config(value: Any, secrets: Sequence[str] = ()) -> Any:
    """A config minus anything that looks like a credential.

    Keys named like one are dropped; in strings, the given secrets, Hub-token-shaped words,
    bearer values and URL user info are redacted. Other objects become scrubbed strings.
    """
    if isinstance(value, Mapping):
        return {str(k): scrub_config(v, secrets) for k, v in value.items()
                if not _SECRET_KEY_RE.search(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_config(v, secrets) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub_str(str(value), secrets)


def scrub_str(text: str, secrets: Sequence[str] = ()) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return _URL_USERINFO_RE.sub("", scrub_text(text))
