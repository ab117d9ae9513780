"""Project-wide test setup: devhub on loopback as the Hub, W&B offline, nothing of the user's.

The transfer is production's default (Xet): tests that need plain LFS say so, per test
(`tests/e2e/conftest.py`'s `transfer_mode`, `uploader.hfcompat.xet_switch`).
"""

import os
import tempfile

# Before anything imports huggingface_hub: it reads these at import time.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Downloads in tests (snapshot_download from devhub) must not fill the user's HF cache.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ckpt-sidecar-hf-home-")
for _leak in ("HF_TOKEN", "HF_TOKEN_FILE", "HF_ENDPOINT", "HUB_NAMESPACE", "HUB_REPO_PREFIX",
              "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET", "HF_XET_CACHE"):
    os.environ.pop(_leak, None)
