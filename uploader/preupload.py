"""Sending one file's bytes while the next one is hashed: a small background sender per upload.

The pipeline hands each file over as soon as it may be sent (Xet: at once, hf_xet hashes what it
reads; LFS: once its sha256 is known, the LFS batch needs it) and hashes the next meanwhile, so
the first byte leaves within a second of the completion marker and hashing overlaps the
transfer. The commit comes last and carries the same operation objects, so nothing is sent twice.
Whatever the worker met (a classified `UploaderError` after the client's retries) is raised from
`finish()` in the caller's thread; on the caller's own error `abandon()` waits for the transfer
in flight and drops the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from types import TracebackType

from huggingface_hub import CommitOperationAdd

from uploader.hub import HubClient, Preuploaded

log = logging.getLogger(__name__)

_DONE = None  # queue sentinel: no more operations


class Preuploader:
    """One upload's background sender: `submit` operations, then `finish` for the result."""

    def __init__(self, hub: HubClient, repo_id: str, use_xet: bool, total: int = 0,
                 senders: int = 1) -> None:
        """`total`: the upload's bytes in all, for the progress line. `senders`: batches sent
        at once (LFS: a file still uploading while the next, just hashed, starts)."""
        self.hub = hub
        self.repo_id = repo_id
        self.use_xet = use_xet
        self.total = total
        self._queue: queue.SimpleQueue[list[CommitOperationAdd] | None] = queue.SimpleQueue()
        self._sent: dict[str, CommitOperationAdd] = {}
        self._sent_lock = threading.Lock()
        self._error: BaseException | None = None
        self._abandoned = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"send-{i}-{repo_id}",
                                          daemon=True) for i in range(max(1, senders))]
        for thread in self._threads:
            thread.start()

    def submit(self, operations: Sequence[CommitOperationAdd]) -> None:
        """Queue operations to send; a failure already met is raised at `finish`."""
        if operations:
            self._queue.put(list(operations))

    def finish(self) -> Preuploaded:
        """Wait until everything submitted was sent; raises what the sender met."""
        self._stop_senders()
        if self._error is not None:
            raise self._error
        return Preuploaded(self.use_xet, dict(self._sent))

    def abandon(self) -> None:
        """The caller failed: send nothing more, wait for the transfers in flight to end."""
        self._abandoned.set()
        self._stop_senders()

    def _stop_senders(self) -> None:
        for _ in self._threads:
            self._queue.put(_DONE)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Preuploader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None or any(t.is_alive() for t in self._threads):
            self.abandon()

    def _run(self) -> None:
        done = False
        while not done:
            batch: list[CommitOperationAdd] = []
            item = self._queue.get()
            # Everything queued meanwhile goes in one call: small files hash in microseconds
            # and would otherwise cost one preupload round trip each. A sender that takes the
            # end mark stops (each sender gets one).
            while True:
                if item is _DONE:
                    done = True
                    break
                batch.extend(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if not batch or self._error is not None or self._abandoned.is_set():
                continue
            try:
                self.hub.preupload(self.repo_id, batch, self.use_xet, self.total)
            except BaseException as exc:  # raised again in the caller's thread by finish()
                self._error = exc
                continue
            with self._sent_lock:
                for operation in batch:
                    self._sent[operation.path_in_repo] = operation


__all__ = ["Preuploader"]
