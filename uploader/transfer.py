"""Which transfer the uploader uses, decided the way huggingface_hub decides, and hf_xet's settings.

    --transfer auto (default)  HF_HUB_DISABLE_XET=1 -> LFS, exactly as for huggingface_hub itself;
                               otherwise Xet, falling back to LFS for an endpoint whose Xet token
                               route answers 404 (a server without Xet storage), said once.
    --transfer xet             Xet or a clear error; contradicting HF_HUB_DISABLE_XET=1 is an error.
    --transfer lfs             plain LFS, whatever the environment says.

hf_xet reads its configuration from `HF_XET_*` variables when its session starts. The uploader
derives them from its own settings, so one call never retries for minutes under settings that
say seconds, and keeps hf_xet's cache and logs under the state dir. A `HF_XET_*` variable the
user set wins: it means what hf_xet documents.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uploader.errors import ConfigError
from uploader.settings import Transfer

HF_HUB_DISABLE_XET = "HF_HUB_DISABLE_XET"
HF_HUB_DISABLE_TELEMETRY = "HF_HUB_DISABLE_TELEMETRY"
HF_XET_CACHE = "HF_XET_CACHE"
XET_PACKAGE = "hf_xet"
XET_CACHE_DIRNAME = "xet"
# hf_xet's defaults are sized for servers (a 16 GB shard cache, 250 MB of logs).
SHARD_CACHE_LIMIT_BYTES = 256 * 1024 * 1024
LOG_DIR_LIMIT_BYTES = 16 * 1024 * 1024
# Concurrent file reads per upload thread (`--concurrency`), and the most in all (hf_xet's own).
# Each file hf_xet ingests holds xorbs of up to 64 MiB being built, compressed and sent: two
# at a time (a checkpoint's adapter and optimizer state) peaked at 515 MiB for 1-4 GiB, one at
# 330-410 MiB but 20% slower at 1 GiB (devhub on loopback). hf_xet's default is 8.
FILES_PER_UPLOAD = 2
MAX_FILE_INGESTION = 8
# The first retry of a storage request comes soon; later ones back off inside hf_xet.
XET_RETRY_BASE_DELAY_S = 1.0
# huggingface_hub's reading of a boolean variable (constants._is_true).
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


def xet_installed() -> bool:
    """True when hf_xet can be imported (huggingface_hub then uploads through it)."""
    return importlib.util.find_spec(XET_PACKAGE) is not None


def env_true(value: str | None) -> bool:
    return (value or "").strip().upper() in _TRUE


@dataclass(frozen=True)
class TransferChoice:
    use_xet: bool
    reason: str  # said in the start-up log
    may_fall_back: bool = False  # auto: an endpoint without Xet gets LFS instead of an error

    @property
    def name(self) -> str:
        return "xet" if self.use_xet else "lfs"


def choose_transfer(setting: Transfer, environ: Mapping[str, str]) -> TransferChoice:
    disabled = env_true(environ.get(HF_HUB_DISABLE_XET))
    if setting is Transfer.LFS:
        return TransferChoice(False, "--transfer lfs")
    if setting is Transfer.XET:
        if disabled:
            raise ConfigError("--transfer xet / UPLOADER_TRANSFER=xet contradicts "
                              f"{HF_HUB_DISABLE_XET}=1",
                              f"unset {HF_HUB_DISABLE_XET}, or use --transfer auto or lfs")
        if not xet_installed():
            raise ConfigError("--transfer xet needs the hf_xet package, which is not installed",
                              "pip install hf_xet, or use --transfer auto or lfs")
        return TransferChoice(True, "--transfer xet")
    if disabled:
        return TransferChoice(False, f"{HF_HUB_DISABLE_XET} is set")
    if not xet_installed():
        return TransferChoice(False, "hf_xet is not installed")
    return TransferChoice(True, "default", may_fall_back=True)


def _ms(seconds: float) -> str:
    # hf_xet reads durations with a unit; a bare number is silently ignored.
    return f"{max(1, round(seconds * 1000))}ms"


def xet_environment(*, state_dir: Path, connect_timeout: float, read_timeout: float,
                    retry_attempts: int, retry_max_wait: float, environ: Mapping[str, str],
                    concurrency: int = 1) -> dict[str, str]:
    """The `HF_XET_*` variables to add to the uploader's environment (the user's own win)."""
    wanted = {
        HF_XET_CACHE: str(state_dir / XET_CACHE_DIRNAME),
        "HF_XET_SHARD_CACHE_SIZE_LIMIT": str(SHARD_CACHE_LIMIT_BYTES),
        "HF_XET_LOG_DIR_MAX_SIZE": str(LOG_DIR_LIMIT_BYTES),
        "HF_XET_CLIENT_CONNECT_TIMEOUT": _ms(connect_timeout),
        "HF_XET_CLIENT_READ_TIMEOUT": _ms(read_timeout),
        "HF_XET_CLIENT_RETRY_MAX_ATTEMPTS": str(retry_attempts),
        "HF_XET_CLIENT_RETRY_BASE_DELAY": _ms(min(XET_RETRY_BASE_DELAY_S, retry_max_wait)),
        "HF_XET_CLIENT_RETRY_MAX_DURATION": _ms(retry_max_wait * retry_attempts),
        # Files read and chunked at once, each with its own buffers: a checkpoint's few large
        # files per upload thread, not hf_xet's server-sized default.
        "HF_XET_DATA_MAX_CONCURRENT_FILE_INGESTION": str(
            min(MAX_FILE_INGESTION, FILES_PER_UPLOAD * concurrency)),
    }
    if env_true(environ.get(HF_HUB_DISABLE_TELEMETRY)):
        wanted["HF_XET_TELEMETRY_ENABLED"] = "false"
    return {name: value for name, value in wanted.items() if not environ.get(name)}
