"""W&B for the uploader: its own run (`job_type="upload"`) beside the training run.

    config.py    when W&B is on, where the run goes, the settings with secrets removed
    rows.py      what is logged per checkpoint: history row, table, reference artifact
    tracker.py   the worker thread that owns the wandb run; `NoTracking` when W&B is off

The run lives under the state dir (`<state_dir>/wandb/`), its id is kept in the state so a
restarted uploader resumes it, and no W&B call ever runs on the upload path.
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
