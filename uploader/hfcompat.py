"""Every use of huggingface_hub beyond its documented API, in one place.

The uploader otherwise sticks to the public API. What is left here has no public equivalent in
the pinned version (see pyproject.toml); each name has a test in tests/uploader/test_hfcompat.py
that fails when the pinned library changes it, so an upgrade shows here first.

- `request_event_hook`: the hook huggingface_hub's default HTTP client runs on every request
  (offline mode, request ids). A client factory that only adds timeouts must keep it.
- `declare_sha256`: hands the sha256 we already computed to an LFS upload, so the library does
  not read the file a second time. Never used for Xet uploads: there hf_xet computes the sha256
  from the bytes it reads, which keeps the Hub's sha256 a check on our own hash.
- `forget_shard_cache`: hf_xet skips xorbs its client-side shard cache says the storage holds
  (`<HF_XET_CACHE>/<endpoint>/shard-cache`, re-read on each upload). A repair must send the
  bytes again, so it drops that cache first; it is only a cache.
- `xet_switch`: the library decides LFS or Xet from `constants.HF_HUB_DISABLE_XET` at call time
  and has no per-call argument. The switch sets it for the duration of our own calls only and
  puts the previous value back, so the user's setting is what every other caller sees.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from huggingface_hub import CommitOperationAdd, constants
from huggingface_hub.utils._http import hf_request_event_hook

request_event_hook = hf_request_event_hook
SHARD_CACHE_GLOB = "*/shard-cache"


def forget_shard_cache(xet_cache: Path | None) -> None:
    """Drop hf_xet's shard cache under `xet_cache` (nothing when None)."""
    if xet_cache is None:
        return
    for cache in xet_cache.glob(SHARD_CACHE_GLOB):
        shutil.rmtree(cache, ignore_errors=True)


def declare_sha256(operation: CommitOperationAdd, sha256_hex: str) -> None:
    """Give an LFS upload the content hash we computed, instead of letting it re-read the file."""
    operation.upload_info.sha256 = bytes.fromhex(sha256_hex)


class _XetSwitch:
    """Holds `HF_HUB_DISABLE_XET` at one value while our calls run; restores it after.

    Calls that want the same transfer share the hold; a call wanting the other one waits until
    the hold is released, so two transfers never race on the one library-wide flag.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holders = 0
        self._held: bool | None = None
        self._saved: bool | None = None

    @contextmanager
    def hold(self, use_xet: bool) -> Iterator[None]:
        disable = not use_xet
        with self._cond:
            while self._holders and self._held is not disable:
                self._cond.wait()
            if self._holders == 0:
                self._saved = constants.HF_HUB_DISABLE_XET
                constants.HF_HUB_DISABLE_XET = disable
                self._held = disable
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders -= 1
                if self._holders == 0:
                    constants.HF_HUB_DISABLE_XET = bool(self._saved)
                    self._held = None
                    self._cond.notify_all()


_SWITCH = _XetSwitch()


def xet_switch(use_xet: bool) -> AbstractContextManager[None]:
    """`with xet_switch(True): api.create_commit(...)` uploads through Xet, whatever the flag."""
    return _SWITCH.hold(use_xet)
