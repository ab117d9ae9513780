"""W&B for the training run: one run per run id, resumed across restarts, grouped by run id.

The run is started here (before `Trainer`), so transformers' `WandbCallback` reuses it instead
of creating its own; the final F1 metrics are logged and the run finished here too.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.run_info import RunInfo

log = logging.getLogger(__name__)


def start_wandb(info: RunInfo, config: dict[str, Any]) -> Any:
    import wandb

    run = wandb.init(
        project=info.wandb_project,
        group=info.wandb_group or info.run_id,
        id=info.wandb_run_id,
        name=f"train-{info.run_id[:8]}",
        job_type="train",
        resume="allow",
        config={**config, "run_id": info.run_id},
    )
    log.info("wandb run started", extra={"project": info.wandb_project, "id": info.wandb_run_id})
    return run


def log_metrics(run: Any, metrics: dict[str, float], step: int) -> None:
    """Log final metrics and copy them into the run summary."""
    if run is None:
        return
    run.log({**metrics, "train/global_step": step})
    for key, value in metrics.items():
        run.summary[key] = value


def finish_wandb(run: Any, failed: bool) -> None:
    if run is not None:
        run.finish(exit_code=1 if failed else 0)
