"""Project-wide test setup: the Hub client talks plain LFS to devhub, W&B stays offline."""

import os
import tempfile

# Before anything imports huggingface_hub: it reads these at import time.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Downloads in tests (snapshot_download from devhub) must not fill the user's HF cache.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ckpt-sidecar-hf-home-")
for _leak in ("HF_TOKEN", "HF_TOKEN_FILE", "HF_ENDPOINT", "HUB_NAMESPACE", "HUB_REPO_PREFIX",
              "HF_HUB_OFFLINE"):
    os.environ.pop(_leak, None)
