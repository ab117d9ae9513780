"""Run info: who the run is (a UUID kept across resumes) and how it ended.

Written by the trainer to `<output_dir>/run_info.json` at start, and again at exit with the end
time and outcome, also when training fails, so that `uploader watch --exit-when-done` knows the
run is over. Repos, manifests, resume, `best` and `cleanup` are scoped by `run_id`.
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.fsutil import atomic_write_json
from shared.layout import run_info_path
from shared.markers import format_utc, parse_utc

SCHEMA_VERSION = 1


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class RunInfoError(ValueError):
    """The run-info file exists but cannot be read."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    base_model: str
    started_at: str
    wandb_project: str | None = None
    wandb_group: str | None = None
    wandb_run_id: str | None = None
    ended_at: str | None = None
    outcome: Outcome | None = None
    schema: int = SCHEMA_VERSION

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value if self.outcome else None
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunInfo:
        try:
            info = cls(
                run_id=str(data["run_id"]),
                base_model=str(data["base_model"]),
                started_at=str(data["started_at"]),
                wandb_project=data.get("wandb_project"),
                wandb_group=data.get("wandb_group"),
                wandb_run_id=data.get("wandb_run_id"),
                ended_at=data.get("ended_at"),
                outcome=Outcome(data["outcome"]) if data.get("outcome") else None,
                schema=int(data.get("schema", SCHEMA_VERSION)),
            )
            uuid.UUID(info.run_id)
            parse_utc(info.started_at)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunInfoError(f"malformed run info: {exc}") from exc
        return info


def read_run_info(output_dir: Path) -> RunInfo | None:
    path = run_info_path(output_dir)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunInfoError(f"cannot read {path}: {exc}") from exc
    try:
        return RunInfo.from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise RunInfoError(f"{path} is not JSON: {exc}") from exc


def write_run_info(output_dir: Path, info: RunInfo) -> None:
    atomic_write_json(run_info_path(output_dir), info.to_json())


def start_run(
    output_dir: Path,
    *,
    base_model: str,
    resume: bool,
    wandb_project: str | None = None,
    wandb_group: str | None = None,
    wandb_run_id: str | None = None,
    now: datetime | None = None,
) -> RunInfo:
    """Record a start. A resumed run keeps its run id (and W&B ids); a fresh start gets new ones.

    The W&B group defaults to the run id so the training run and the uploader's run sit
    together in the W&B UI.
    """
    previous = read_run_info(output_dir) if resume else None
    started = format_utc(now or datetime.now(UTC))
    if previous is not None:
        info = replace(
            previous,
            base_model=base_model,
            started_at=started,
            wandb_project=wandb_project or previous.wandb_project,
            wandb_group=wandb_group or previous.wandb_group,
            wandb_run_id=wandb_run_id or previous.wandb_run_id,
            ended_at=None,
            outcome=None,
        )
    else:
        run_id = str(uuid.uuid4())
        info = RunInfo(
            run_id=run_id,
            base_model=base_model,
            started_at=started,
            wandb_project=wandb_project,
            wandb_group=wandb_group or run_id,
            wandb_run_id=wandb_run_id or uuid.uuid4().hex[:12],
        )
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_run_info(output_dir, info)
    return info


def finish_run(output_dir: Path, outcome: Outcome, now: datetime | None = None) -> RunInfo:
    info = read_run_info(output_dir)
    if info is None:
        raise RunInfoError(f"no run info in {output_dir} to finish")
    ended = replace(info, outcome=outcome, ended_at=format_utc(now or datetime.now(UTC)))
    write_run_info(output_dir, ended)
    return ended
