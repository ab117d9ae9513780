"""W&B for the uploader: its own run (`job_type="upload"`) beside the training run.

    config.py    when W&B is on, where the run goes, the settings with secrets removed
    rows.py      what is logged per checkpoint: history row, table, reference artifact
    tracker.py   the worker thread that owns the wandb run; `NoTracking` when W&B is off

Online, with the training run's W&B id known, the uploader writes into the training run (W&B's
shared mode); otherwise into its own `upload` run under `WANDB_DIR` (default: the state dir),
its id kept in the state so a restarted uploader resumes it. No W&B call ever runs on the
upload path.
"""

from uploader.tracking.config import Mode, TrackingConfig, scrub_config, tracking_config, wandb_mode
from uploader.tracking.tracker import (
    RUN_ID_KEY,
    MetaStore,
    NoTracking,
    Tracker,
    WandbTracker,
    tracking_from_env,
)

__all__ = [
    "RUN_ID_KEY",
    "MetaStore",
    "Mode",
    "NoTracking",
    "Tracker",
    "TrackingConfig",
    "WandbTracker",
    "scrub_config",
    "tracking_config",
    "tracking_from_env",
    "wandb_mode",
]
