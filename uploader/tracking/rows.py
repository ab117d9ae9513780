"""What goes to W&B for each checkpoint, as plain values (no wandb here, so it tests cheaply)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.layout import Kind
from uploader.state import State

if TYPE_CHECKING:
    from uploader.events import UploadResult
    from uploader.state import Record

ARTIFACT_TYPE = "model"
TABLE_KEY = "checkpoints"
TABLE_COLUMNS = ("step", "kind", "eval_loss", "repo_id", "url", "state")
BEST, FINAL = "best", "final"
# Charts of these use the checkpoint step as x axis: W&B's own `_step` restarts with every
# offline resume, the checkpoint step does not.
STEPPED_METRICS = ("upload_*", "lag_seconds", "queue_depth", "attempts", "checkpoint_eval_loss")
_LANDED = (State.VERIFIED, State.PRUNED)


def upload_metrics(result: UploadResult, queue_depth: int | None) -> dict[str, Any]:
    """One history row per verified upload; `checkpoint_step`/`checkpoint_url` as in the seed."""
    rec = result.record
    row: dict[str, Any] = {
        "checkpoint_step": rec.step,
        "checkpoint_url": rec.url,
        "upload_seconds": result.seconds,
        "upload_bytes": result.bytes,
        "upload_MBps": result.bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0,
        "upload_adopted": int(result.adopted),
        "attempts": rec.attempts,
    }
    if queue_depth is not None:
        row["queue_depth"] = queue_depth
    if rec.completed_at is not None and rec.verified_at is not None:
        row["lag_seconds"] = rec.verified_at - rec.completed_at
    if rec.eval_loss is not None:
        row["checkpoint_eval_loss"] = rec.eval_loss
    return row


def failure_metrics(record: Record, error_class: str) -> dict[str, Any]:
    return {"checkpoint_step": record.step, "upload_failed": 1,
            "upload_error_class": error_class, "attempts": record.attempts}


def is_best(record: Record, rows: Mapping[int, Record]) -> bool:
    """Lowest eval_loss among the landed checkpoints known so far (a tie goes to the newer)."""
    loss = record.eval_loss
    if record.kind is not Kind.CHECKPOINT or loss is None or math.isnan(loss):
        return False
    others = [r.eval_loss for r in rows.values()
              if r.kind is Kind.CHECKPOINT and r.state in _LANDED and r.eval_loss is not None
              and not math.isnan(r.eval_loss)]
    return loss <= min(others, default=math.inf)


def aliases(record: Record, best: bool) -> list[str]:
    # step-N would steal the alias of the checkpoint saved at the same step, so the final
    # adapter gets only its own.
    names = [FINAL] if record.kind is Kind.FINAL else [f"step-{record.step}"]
    return [*names, BEST] if best else names


def artifact_metadata(result: UploadResult) -> dict[str, Any]:
    """What a reference cannot checksum itself (private repo): the manifest's files and hashes.

    `result.files` (path, size, sha256 each, e.g. `ManifestFile`) when the pipeline passes it;
    otherwise the sizes the state recorded, without hashes.
    """
    rec = result.record
    files = getattr(result, "files", None)
    if files:
        listed = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]
    else:
        listed = [{"path": f.path, "size": f.size, "sha256": None} for f in rec.files]
    return {"repo_id": rec.repo_id, "url": rec.url, "step": rec.step, "kind": str(rec.kind),
            "commit_sha": rec.commit_sha, "run_id": rec.run_id, "metrics": dict(rec.metrics),
            "total_bytes": result.bytes, "files": listed}


def pinned_url(record: Record) -> str | None:
    """The repo at the commit that was verified (`/tree/<sha>`), not its moving head."""
    if not record.url:
        return None
    return f"{record.url}/tree/{record.commit_sha}" if record.commit_sha else record.url


def table_row(record: Record) -> list[Any]:
    return [record.step, str(record.kind), record.eval_loss, record.repo_id, record.url,
            str(record.state)]


def reference_name(record: Record) -> str:
    return record.repo_id.rsplit("/", 1)[-1]


def table_rows(rows: Mapping[int, Record]) -> list[list[Any]]:
    ordered = sorted(rows.values(), key=lambda r: (r.kind is Kind.FINAL, r.step, r.id))
    return [table_row(r) for r in ordered]


def artifact_name(train_run_id: str | None, wandb_run_id: str) -> str:
    """One artifact collection per training run; its versions are the checkpoints."""
    return f"checkpoints-{train_run_id or wandb_run_id}"


def run_name(train_run_id: str | None) -> str:
    # Beside the trainer's `train-<run id[:8]>` in the W&B UI.
    return f"upload-{train_run_id[:8]}" if train_run_id else "upload"
