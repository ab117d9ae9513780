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
- `count_transfer`: the library's own per-file progress, routed by local path to a callback for
  the duration of one commit (the progress line, `uploader.progress`). LFS: the reads of
  `huggingface_hub.utils.tqdm_stream_file`, the stream `CommitOperationAdd.as_file(with_tqdm=
  True)` hands to every LFS PUT (also with the library's bars disabled); Xet: the item reports of
  the `progress_callback` that `_upload_xet_files` passes to `XetSession.new_upload_commit`
  (reached through `huggingface_hub.utils._xet.get_xet_session`, looked up at call time), which
  the library only creates while its bars are on, so one is added when needed and the library's
  own is still called. Paths nobody registered pass through untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub.utils as hf_utils
from huggingface_hub import CommitOperationAdd, constants
from huggingface_hub.utils import _xet as hf_xet_utils
from huggingface_hub.utils._http import hf_request_event_hook

log = logging.getLogger(__name__)

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


# -- the library's transfer progress ------------------------------------------------------------

FileProgress = Callable[[int], None]  # bytes of one file transferred so far (absolute)


def _key(path: object) -> str:
    return os.path.abspath(os.fspath(path))  # type: ignore[call-overload]


class _TransferProgress:
    """Local path -> callback, while a commit holding that file runs; the hooks installed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, FileProgress] = {}
        self._installed = False
        self._stream_file: Any = None
        self._get_session: Any = None

    def watcher(self, path: object) -> FileProgress | None:
        if not self._watched or not isinstance(path, str | os.PathLike):
            return None
        return self._watched.get(_key(path))

    @contextmanager
    def watch(self, files: Mapping[str, FileProgress]) -> Iterator[None]:
        keys = {_key(path): report for path, report in files.items()}
        with self._lock:
            self._install()
            self._watched.update(keys)
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    self._watched.pop(key, None)

    def _install(self) -> None:
        if self._installed:
            return
        self._stream_file = hf_utils.tqdm_stream_file
        self._get_session = hf_xet_utils.get_xet_session
        hf_utils.tqdm_stream_file = self._counted_stream_file
        hf_xet_utils.get_xet_session = self._counted_session
        self._installed = True

    @contextmanager
    def _counted_stream_file(self, path: Any) -> Iterator[Any]:
        """The library's LFS stream (its bar, on or off), with every read also counted."""
        with self._stream_file(path) as fileobj:
            report = self.watcher(path)
            if report is not None:
                inner, high = fileobj.read, 0

                def read(size: int | None = -1) -> bytes:
                    nonlocal high
                    data = inner(size)
                    # The position, not a sum of reads: a retried PUT seeks back and reads the
                    # same bytes again, which were not sent twice.
                    position = fileobj.tell()
                    if position > high:
                        high = position
                        _safely(report, high)
                    return data

                fileobj.read = read
            yield fileobj

    def _counted_session(self) -> Any:
        session = self._get_session()
        return _CountedXetSession(session, self) if self._watched else session


class _CountedXetSession:
    """hf_xet's session, with the progress of each upload commit routed by local path."""

    def __init__(self, session: Any, progress: _TransferProgress) -> None:
        self._session = session
        self._progress = progress

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def new_upload_commit(self, *args: Any, progress_callback: Any = None, **kwargs: Any) -> Any:
        library = progress_callback

        def report(group: Any, items: Any = None) -> None:
            try:
                for item in (items or {}).values():
                    watcher = self._progress.watcher(getattr(item, "item_name", None))
                    if watcher is not None:
                        watcher(int(item.bytes_completed))
            except Exception:  # progress must never break an upload
                log.debug("unreadable hf_xet progress report", exc_info=True)
            if library is not None:
                library(group, items)

        return self._session.new_upload_commit(*args, progress_callback=report, **kwargs)


def _safely(report: FileProgress, done: int) -> None:
    try:
        report(done)
    except Exception:  # progress must never break an upload
        log.debug("progress listener failed", exc_info=True)


_PROGRESS = _TransferProgress()


def count_transfer(files: Mapping[str, FileProgress]) -> AbstractContextManager[None]:
    """`with count_transfer({local_path: on_bytes}): api.create_commit(...)`: while the commit
    runs, the library's own progress for each of those files calls its `on_bytes` with the bytes
    of that file transferred so far, in both transfers (LFS, Xet). Files sent inline in the
    commit request (small text files) or already on the server report nothing."""
    return _PROGRESS.watch(files)
