"""The path from "folder appeared" to "repo verified", top to bottom.

    observe(folder)   detect complete -> record `pending` -> stage (hard links, at once)
    upload(record)    staged copy intact? -> hash each byte once -> model card + manifest
                      -> adopt the repo if it already holds these files, else create + commit
                      -> verify the remote tree at that commit -> keep the digests it was
                      verified against -> `verified` -> drop staging
    recheck(record)   later (`verify`, or before pruning): the same comparison again
    reopen(record)    a damaged remote copy: back to `pending` when the local folder still
                      holds that version, else `failed` and loud

Every transition is written to the state before the next action ("record, then act"), and the
repo id is recomputed from the checkpoint itself, so a `kill -9` anywhere repeats at most the
step in flight and never creates a second repo. `watch` and `backfill` both drive this class.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import cast

from shared.hashing import LFS_ONLY_SIZE, FileDigest, digest_bytes, digest_file
from shared.layout import FolderRef, Kind, list_folders
from shared.manifest import MANIFEST_FILENAME, Manifest, ManifestFile, read_metrics
from shared.markers import FileStat
from shared.naming import RepoNameError, make_repo_name
from uploader.detect import CompletionDetector, Detection, FolderVersion, Verdict
from uploader.errors import (
    AuthError,
    PermanentError,
    RateLimitedError,
    StagingError,
    TransientError,
    UploaderError,
    VerificationError,
)
from uploader.events import Events, ExpectedFile, NoEvents, UploadResult
from uploader.hub import HubClient, LocalFile, Preuploaded, upload_operation
from uploader.listing import FolderListing
from uploader.modelcard import render_model_card
from uploader.pacing import PacingInterrupted
from uploader.preupload import Preuploader
from uploader.retry import resume_time
from uploader.stage import StagedFolder, Stager
from uploader.state import HEARTBEAT_KEY, Record, State, StateStore
from uploader.verify import (
    check,
    compare,
    content_problems,
    listing_problems,
    remote_listing,
    verify_commit,
)

log = logging.getLogger(__name__)

MODEL_CARD = "README.md"
# A remote copy that fails verification is re-uploaded at once this many times, then it waits
# for the next round like any other failure (a server that damages every copy must not spin us).
IMMEDIATE_REUPLOADS = 3
# Meta key prefix (+ version key): the digests of every file a version was verified against, so a
# later check compares the Hub with what we hashed, not with what the Hub now says it holds.
EXPECTED_KEY = "expected_files:"
FINISHED = frozenset({State.VERIFIED, State.PRUNED, State.SUPERSEDED, State.DELETED})
# Meta key prefix (+ version key): a damaged remote copy must really be sent again. A plain
# re-commit would be a no-op: the client skips files whose remote oid matches, and the storage
# dedups objects it (wrongly) believes intact.
RESEND_KEY = "resend:"
# LFS batches sent at once while the rest is hashed.
LFS_SENDERS = 2
# How often a wait for the trainer's save re-checks whether the save is over (s).
YIELD_POLL = 0.2
# Versions of one folder saved within the same second that still get distinct repo ids.
MAX_SAME_SECOND_VERSIONS = 60


@dataclass(frozen=True)
class PipelineConfig:
    output_dir: Path
    namespace: str
    prefix: str
    base_model: str | None = None
    run_id: str | None = None
    round_backoff: float = 60.0
    round_backoff_max: float = 1800.0
    source_host: str = field(default_factory=socket.gethostname)
    # While the trainer writes a checkpoint, hashing and new uploads wait up to this long (s).
    yield_to_saves: float = 0.0


class Pipeline:
    """One output dir's checkpoints, from detection to verification. Thread-safe."""

    def __init__(
        self,
        config: PipelineConfig,
        store: StateStore,
        detector: CompletionDetector,
        stager: Stager,
        hub: HubClient,
        events: Events | None = None,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self._stop = stop or threading.Event()
        self.store = store
        self.detector = detector
        self.stager = stager
        self.hub = hub
        self.events = events or NoEvents()
        self.clock = clock
        # Detection and uploads run in different threads; SQLite calls are short, so one lock
        # around the store is simpler than a connection per thread.
        self._store_lock = threading.RLock()
        self._detect_lock = threading.Lock()
        # A record is visible to the upload thread as soon as it is recorded, before its
        # snapshot exists: the upload side takes this lock to wait for staging to finish.
        self._stage_lock = threading.RLock()
        self._claim_lock = threading.Lock()
        self._digests: dict[str, dict[str, FileDigest]] = {}  # version_key -> path -> digest
        self._unannounced: dict[str, int] = {}  # version_key -> 429s in a row that gave no wait
        self._in_flight: set[int] = set()
        # Completed folders admitted so far: a new one means the trainer just finished a save
        # (and its rotation), the moment the watcher lets the pruner run.
        self.admissions = 0
        self._recheck_turn = 0  # where the next watcher rescan resumes re-judging finished ones
        self._listing = FolderListing(config.output_dir)

    # -- detection -----------------------------------------------------------------------
    def scan(self, finished_budget: int | None = None, fresh_listing: bool = False
             ) -> dict[str, Detection]:
        """Judge the uploadable folders of the output dir; admit the complete ones.

        `finished_budget` (the watcher's rescans): every folder not finished yet is judged, and
        of those whose newest version is finished (verified, ...) at most this many, in turn,
        so a rescan over 10,000 verified checkpoints costs what one over 500 does, and each is
        still re-judged within 10,000 / budget rescans. A finished folder in its turn costs one
        stat pass while it still holds the recorded version; the others count as complete as
        recorded. None (backfill): every folder, judged in full. The rescans reuse the
        directory listing while the output dir is unchanged (`uploader.listing`), unless
        `fresh_listing` (a rescan asked for: an inotify overflow, the run's end).
        """
        if finished_budget is None:
            return {ref.name: self.observe(ref) for ref in list_folders(self.config.output_dir)}
        refs = self._listing.refs(fresh=fresh_listing)
        with self._store_lock:
            latest = self.store.latest_versions()
        finished = sorted(r.name for r in refs
                          if r.name in latest and latest[r.name].state in FINISHED)
        in_turn = set(finished)
        if len(finished) > finished_budget:
            start = self._recheck_turn % len(finished)
            in_turn = set((finished[start:] + finished[:start])[:finished_budget])
            self._recheck_turn = start + finished_budget
        as_recorded = Detection(Verdict.COMPLETE, None, "finished as recorded; re-judged in turn")
        unchanged = Detection(Verdict.COMPLETE, None, "finished; unchanged since recorded")
        detections: dict[str, Detection] = {}
        for ref in refs:
            newest = latest.get(ref.name)
            if newest is None or newest.state not in FINISHED:
                detections[ref.name] = self.observe(ref)
            elif ref.name not in in_turn:
                detections[ref.name] = as_recorded
            elif self.detector.unchanged(ref, newest.step, newest.version_key):
                detections[ref.name] = unchanged
            else:
                detections[ref.name] = self.observe(ref)
        return detections

    def observe(self, ref: FolderRef) -> Detection:
        with self._detect_lock:
            detection = self.detector.check(ref)
        if detection.verdict is Verdict.COMPLETE and detection.version is not None:
            with self._store_lock:
                known = self.store.has_key(detection.version.version_key)
            if not known:
                with self._stage_lock:
                    self._admit(detection.version)
        else:
            # The detector logs each change of verdict once; here only the per-pass detail.
            log.debug("folder not complete", extra={"folder": ref.name,
                                                     "verdict": detection.verdict,
                                                     "reason": detection.reason})
        return detection

    def judge(self, ref: FolderRef) -> Detection:
        """The detector's verdict on a folder, admitting nothing (for the pruner)."""
        with self._detect_lock:
            return self.detector.check(ref)

    def _admit(self, version: FolderVersion) -> None:
        folder = version.ref.path(self.config.output_dir)
        metrics = read_metrics(folder)
        self.admissions += 1
        if version.origin_repo:
            # Restored from the Hub: that repo already holds exactly these bytes.
            self._record(version, version.origin_repo, metrics, State.VERIFIED)
            log.info("checkpoint restored from the Hub; not uploading it again",
                     extra={"folder": version.ref.name, "repo_id": version.origin_repo})
            return
        try:
            repo_id = self._unclaimed_repo_id(version)
        except RepoNameError as exc:
            log.error("cannot name a repo for this folder", extra={"folder": version.ref.name,
                                                                   "error": str(exc)})
            return
        record = self._record(version, repo_id, metrics, State.PENDING)
        log.info("checkpoint complete", extra={
            "folder": version.ref.name, "step": version.step, "repo_id": record.repo_id,
            "detected_by": version.detected_by, "bytes": version.total_bytes})
        self._stage(record, version)

    def _unclaimed_repo_id(self, version: FolderVersion) -> str:
        """The repo id named by the checkpoint's own time; when another version of the folder
        already owns it (re-saved within the same second), the next free second, so two
        versions never share, and never mix their bytes in, one repo."""
        when = version.timestamp
        for _ in range(MAX_SAME_SECOND_VERSIONS):
            repo_id = make_repo_name(self.config.namespace, self.config.prefix,
                                     version.ref.kind, version.step, when).repo_id
            with self._store_lock:
                owners = [r for r in self.store.by_repo(repo_id)
                          if r.version_key != version.version_key]
            if not owners:
                return repo_id
            log.warning("another version of this folder owns that repo id (saved in the same "
                        "second); naming this one a second later", extra={
                            "folder": version.ref.name, "repo_id": repo_id})
            when += timedelta(seconds=1)
        raise RepoNameError(f"{version.ref.name}: more than {MAX_SAME_SECOND_VERSIONS} versions "
                            "saved within seconds of each other")

    def _record(self, version: FolderVersion, repo_id: str, metrics: dict[str, float],
                state: State) -> Record:
        with self._store_lock:
            return self.store.add(version, repo_id=repo_id, url=self.hub.repo_url(repo_id),
                                  metrics=metrics, state=state)

    def _stage(self, record: Record, version: FolderVersion, *, raise_errors: bool = False
               ) -> StagedFolder | None:
        """The snapshot; None when the folder vanished. A staging failure is recorded on the
        record (and raised with `raise_errors`, for the upload attempt to count it)."""
        try:
            staged = self.stager.stage(version.ref.path(self.config.output_dir), version)
        except StagingError as exc:
            log.error("cannot stage checkpoint", extra={"folder": record.folder,
                                                        "error": exc.one_line()})
            self._update(record, last_error=exc.one_line(), error_class=type(exc).__name__)
            if raise_errors:
                raise
            return None
        except FileNotFoundError:
            return None
        for path, reason in staged.skipped:
            log.warning("file not uploaded", extra={"folder": record.folder, "file": path,
                                                    "reason": reason})
        self._update(record, staged=True)
        return staged

    def records(self) -> list[Record]:
        with self._store_lock:
            return self.store.all()

    def heartbeat(self, last_loop: float) -> None:
        """For `status --health`: when the watcher's loops last ran."""
        with self._store_lock:
            self.store.meta_set(HEARTBEAT_KEY, repr(last_loop))

    # -- upload --------------------------------------------------------------------------
    def due(self) -> list[Record]:
        """Records to attempt now, in step order; the final adapter only after checkpoints."""
        with self._store_lock:
            due = self.store.due(self.clock())
            if not due:  # the idle case: do not read every record back each second
                return due
            unfinished_checkpoints = any(
                r.kind is Kind.CHECKPOINT and r.state in (State.PENDING, State.UPLOADING,
                                                          State.COMMITTED)
                for r in self.store.all())
        if unfinished_checkpoints:
            due = [r for r in due if r.kind is Kind.CHECKPOINT]
        return due

    def claim(self) -> Record | None:
        """The next due record no other upload thread is working on (see `release`)."""
        with self._claim_lock:
            for record in self.due():
                if record.id not in self._in_flight:
                    self._in_flight.add(record.id)
                    return record
        return None

    def release(self, record: Record) -> None:
        with self._claim_lock:
            self._in_flight.discard(record.id)

    def yield_to_trainer(self) -> None:
        """While the trainer is writing a checkpoint, wait (up to `yield_to_saves` seconds) so
        the save gets the disk and the CPU; bytes already handed to the library keep going."""
        limit = self.config.yield_to_saves
        if limit <= 0 or not self.detector.writing_now():
            return
        log.info("the trainer is saving a checkpoint: hashing and uploads wait",
                 extra={"at_most_s": limit})
        deadline = time.monotonic() + limit
        while self.detector.writing_now() and time.monotonic() < deadline:
            if self._stop.wait(YIELD_POLL):
                return

    def upload(self, record: Record) -> Record:
        """One attempt at one record; every outcome is recorded before returning."""
        self.yield_to_trainer()
        try:
            staged = self._staged_copy(record)
        except StagingError as exc:
            # The folder still holds this version: never drop it for a fault of ours (no space,
            # permissions); it stays due, with the error in `status`, until staging works.
            return self._failed(record, exc)
        if staged is None:
            return self._update(record, state=State.SUPERSEDED,
                                last_error="folder changed or vanished before it was staged")
        if not self.stager.unchanged(staged):
            return self._drop_changed(record)
        record = self._update(record, state=State.UPLOADING, attempts=record.attempts + 1)
        started = self.clock()
        try:
            sent = self._send(record, staged)
            if sent is None:
                return self._drop_changed(record)
            files, sha, adopted = sent
            record = self._update(record, commit_sha=sha, uploaded_at=self.clock())
            remote = remote_listing(self.hub, record.repo_id, sha, files)
            check(record.repo_id, sha, files, listing_problems(files, remote))
            record = self._update(record, state=State.COMMITTED)
            check(record.repo_id, sha, files, content_problems(files, remote))
            if not self.stager.unchanged(staged):
                # Rewritten in place while it was read for the upload: what the Hub holds may
                # mix two versions. Never `verified`; the new version is uploaded on its own.
                return self._drop_changed(record)
        except UploaderError as exc:
            return self._failed(record, exc)
        except OSError as exc:
            return self._failed(record, TransientError(f"reading {record.folder}: {exc}"))
        seconds = self.clock() - started
        size = sum(f.digest.size for f in files)
        self._remember(record, files)
        with self._store_lock:
            self.store.meta_delete(RESEND_KEY + record.version_key)
        record = self._update(record, state=State.VERIFIED, verified_at=self.clock(),
                              upload_seconds=seconds, bytes=size, last_error=None,
                              error_class=None, next_attempt_at=None)
        self.stager.remove(record.version_key)
        self._digests.pop(record.version_key, None)
        self._unannounced.pop(record.version_key, None)
        self._update(record, staged=False)
        log.info("checkpoint verified", extra={
            "step": record.step, "repo_id": record.repo_id, "url": record.url, "bytes": size,
            "seconds": round(seconds, 3), "adopted": adopted, "commit": sha})
        self.events.verified(UploadResult(record, seconds, size, adopted, files=tuple(
            ManifestFile(f.path_in_repo, f.digest.size, f.digest.sha256,
                         generated=f.data is not None) for f in files)))
        return record

    def _staged_copy(self, record: Record) -> StagedFolder | None:
        with self._stage_lock:
            return self._staged_or_restaged(record)

    def _staged_or_restaged(self, record: Record) -> StagedFolder | None:
        staged = self.stager.get(record.version_key)
        if staged is not None:
            return staged
        # Staging failed earlier (or was lost): snapshot now if the folder is still this version.
        detection = self.judge(ref_of(record))
        if detection.verdict is Verdict.NOT_YET:
            # Being written or settling: the same completion rules as detection say "later",
            # which is not "gone".
            raise StagingError(f"{record.folder} cannot be judged now: {detection.reason}",
                               "it is tried again once the folder is complete")
        version = detection.version
        if version is None or version.version_key != record.version_key:
            return None
        return self._stage(record, version, raise_errors=True)

    def _drop_changed(self, record: Record) -> Record:
        log.warning("staged bytes changed under the upload (in-place rewrite); dropping this "
                    "version, the new one will be uploaded", extra={"folder": record.folder,
                                                                   "repo_id": record.repo_id})
        self.stager.remove(record.version_key)
        self._digests.pop(record.version_key, None)
        return self._update(record, state=State.SUPERSEDED, staged=False,
                            last_error="content changed after completion")

    def _send(self, record: Record, staged: StagedFolder
              ) -> tuple[list[LocalFile], str, bool] | None:
        """The bytes to the Hub and one commit: (files, commit sha, adopted), or None when the
        staged copy changed meanwhile. A new repo gets the streaming path (each file sent while
        the next is hashed); an existing one (a crash, lost state, a repair) needs every digest
        first, to adopt it when it already holds these files."""
        resend = self._resend_wanted(record)
        exists = self.hub.repo_exists(record.repo_id)
        if exists or resend:
            files = self._prepare(record, staged)
            if not self.stager.unchanged(staged):
                return None
            sha, adopted = self._adopt_or_commit(record, files, exists=exists, resend=resend)
            return files, sha, adopted
        self.hub.ensure_repo(record.repo_id)
        streamed = self._stream(record, staged)
        if not self.stager.unchanged(staged):
            return None
        files, uploaded = streamed
        return files, self.hub.commit(record.repo_id, files, _message(record),
                                      uploaded=uploaded), False

    def _stream(self, record: Record, staged: StagedFolder
                ) -> tuple[list[LocalFile], Preuploaded]:
        """Send every staged file while hashing the others; the files (card and manifest
        included) and what was sent. Xet: the large files go at once and hf_xet's own read
        gives their sha256 (one read per byte; a digest known from an earlier attempt is kept,
        so verification compares two reads). LFS: each once hashed, in `send_order`."""
        use_xet = self.hub.uses_xet(record.repo_id)
        known = self._digests.setdefault(record.version_key, {})
        stats = send_order(s for s in staged.files if s.path != MODEL_CARD)
        by_xet = {s.path for s in stats if use_xet and s.size >= LFS_ONLY_SIZE}
        # LFS: one file still uploading while the next, just hashed, starts (hf_xet runs its
        # own transfers concurrently from the one batch).
        with Preuploader(self.hub, record.repo_id, use_xet, total=sum(s.size for s in stats),
                         senders=1 if use_xet else LFS_SENDERS) as sender:
            if use_xet:  # hf_xet needs no hash of ours: every file in one go, at once
                sender.submit([upload_operation(s.path, staged.path / s.path, s.size, None)
                               for s in stats])
            for stat in stats:
                if stat.path in by_xet:
                    continue
                local = staged.path / stat.path
                if stat.path not in known:
                    # The small files' git sha1 (a regular file's listing carries only that).
                    self.yield_to_trainer()
                    known[stat.path] = digest_file(local)
                if not use_xet:
                    sender.submit([upload_operation(stat.path, local, stat.size,
                                                    known[stat.path].sha256)])
            uploaded = sender.finish()
        for path in by_xet:
            if path not in known:
                operation = uploaded.operations[path]
                known[path] = FileDigest(operation.upload_info.size,
                                         operation.upload_info.sha256.hex(), None)
        files = [LocalFile(s.path, known[s.path], local_path=staged.path / s.path)
                 for s in staged.files if s.path != MODEL_CARD]
        return self._with_card_and_manifest(record, files), uploaded

    def _prepare(self, record: Record, staged: StagedFolder) -> list[LocalFile]:
        """Hash each staged byte once; add the generated model card and the manifest."""
        files: list[LocalFile] = []
        # A later attempt (a failed round, a re-upload after a bad verification) reuses the
        # digests: `stager.unchanged` is checked around every attempt, so they still hold.
        known = self._digests.setdefault(record.version_key, {})
        for stat in staged.files:
            if stat.path == MODEL_CARD:
                continue  # PEFT's card often has metadata the Hub rejects; ours replaces it
            local = staged.path / stat.path
            if stat.path not in known:
                self.yield_to_trainer()
                known[stat.path] = digest_file(local)
            files.append(LocalFile(stat.path, known[stat.path], local_path=local))
        return self._with_card_and_manifest(record, files)

    def _with_card_and_manifest(self, record: Record, files: list[LocalFile]
                                ) -> list[LocalFile]:
        files = list(files)
        card = render_model_card(
            repo_id=record.repo_id, base_model=self.config.base_model, kind=record.kind,
            step=record.step, run_id=record.run_id or self.config.run_id, metrics=record.metrics,
            links={"Hub endpoint": self.hub.repo_url(record.repo_id)})
        files.append(LocalFile(MODEL_CARD, digest_bytes(card), data=card))
        manifest = Manifest(
            run_id=record.run_id or self.config.run_id or "",
            step=record.step,
            kind=record.kind,
            files=tuple(ManifestFile(f.path_in_repo, f.digest.size, f.digest.sha256,
                                     generated=f.data is not None) for f in files),
            source_host=self.config.source_host,
            folder=record.folder,
            created_at=record.timestamp,  # deterministic: a redo uploads identical bytes
            base_model=self.config.base_model,
            metrics=dict(record.metrics),
        ).to_bytes()
        files.append(LocalFile(MANIFEST_FILENAME, digest_bytes(manifest), data=manifest))
        return files

    def _adopt_or_commit(self, record: Record, files: list[LocalFile], *, exists: bool,
                         resend: bool) -> tuple[str, bool]:
        """The repo id is deterministic: after a crash (or with the state lost) the repo may
        already exist, empty or complete. Adopt it when it holds these exact files."""
        replace: list[str] = []
        if exists:
            remote = self.hub.list_files(record.repo_id)
            if not resend and not compare(files, remote):
                return self.hub.head_sha(record.repo_id), True
            if resend:
                replace = [f.path_in_repo for f in files if f.path_in_repo in remote]
        else:
            self.hub.ensure_repo(record.repo_id)
        message = _message(record)
        if resend:
            message = f"{message} (repair: uploaded again)"
        return self.hub.commit(record.repo_id, files, message, replace=replace), False

    def _resend_wanted(self, record: Record) -> bool:
        with self._store_lock:
            return self.store.meta_get(RESEND_KEY + record.version_key) is not None

    def _failed(self, record: Record, error: UploaderError) -> Record:
        if isinstance(error, RateLimitedError | PacingInterrupted):
            return self._postponed(record, error)
        fields: dict[str, object] = {"last_error": error.one_line(),
                                     "error_class": type(error).__name__}
        if isinstance(error, VerificationError):
            # What reached the Hub is not what we hashed: hash the staged bytes afresh.
            self._digests.pop(record.version_key, None)
        if isinstance(error, VerificationError) and record.attempts < IMMEDIATE_REUPLOADS:
            # The remote copy is wrong: upload again from the (still staged) local bytes.
            fields |= {"state": State.PENDING, "next_attempt_at": None}
            log.error("remote copy does not match; uploading again",
                      extra={"repo_id": record.repo_id, "error": error.one_line()})
        else:
            permanent = isinstance(error, PermanentError) and not isinstance(error, AuthError)
            wait = min(self.config.round_backoff * 2 ** max(record.attempts - 1, 0),
                       self.config.round_backoff_max)
            # A snapshot we could not take is our fault, not the checkpoint's: still pending.
            state = State.PENDING if isinstance(error, StagingError) else State.FAILED
            fields |= {"state": state, "permanent": permanent,
                       "next_attempt_at": None if permanent else self.clock() + wait}
            level = logging.ERROR if permanent or isinstance(error, AuthError) else logging.WARNING
            log.log(level, "upload failed", extra={
                "step": record.step, "repo_id": record.repo_id, "error": error.one_line(),
                "permanent": permanent, "retry_in": None if permanent else round(wait, 1)})
        record = self._update(record, **fields)
        self.events.failed(record, error)
        return record

    def update(self, record: Record, **fields: object) -> Record:
        """Record a transition made outside the upload story (pruned, deleted)."""
        return self._update(record, **fields)

    def _postponed(self, record: Record, error: UploaderError) -> Record:
        """A rate limit (or a stop during a pacing wait) is no failure: the checkpoint goes back
        to `pending`, due again when the Hub said, and this attempt is not counted."""
        wait = error.wait_seconds if isinstance(error, RateLimitedError) else 0.0
        if not wait:
            # No wait announced: back off further each time, or a limit that never says when
            # would be hit every round_backoff seconds forever.
            unannounced = self._unannounced.get(record.version_key, 0)
            self._unannounced[record.version_key] = unannounced + 1
            wait = min(self.config.round_backoff * 2 ** unannounced,
                       self.config.round_backoff_max)
        record = self._update(record, state=State.PENDING, attempts=max(record.attempts - 1, 0),
                              next_attempt_at=self.clock() + wait, last_error=error.one_line(),
                              error_class=type(error).__name__)
        log.warning("upload postponed by a rate limit", extra={
            "step": record.step, "repo_id": record.repo_id, "retry_in": round(wait, 1),
            "resume_at": resume_time(wait)})
        return record

    def _update(self, record: Record, **fields: object) -> Record:
        with self._store_lock:
            return self.store.update(record.id, **fields)

    # -- re-verification -------------------------------------------------------------------
    def _remember(self, record: Record, files: list[LocalFile]) -> None:
        rows = [[f.path_in_repo, f.digest.size, f.digest.sha256, f.digest.git_sha1] for f in files]
        with self._store_lock:
            self.store.meta_set(EXPECTED_KEY + record.version_key, json.dumps(rows))

    def expected_files(self, record: Record) -> list[ExpectedFile] | None:
        """What `record`'s commit was verified to hold; None when not kept (restored from the
        Hub, or verified by an older uploader)."""
        with self._store_lock:
            raw = self.store.meta_get(EXPECTED_KEY + record.version_key)
        if raw is None:
            return None
        return [ExpectedFile(str(p), FileDigest(int(n), str(sha),
                                                None if sha1 is None else str(sha1)))
                for p, n, sha, sha1 in json.loads(raw)]

    def recheck(self, record: Record, expected: list[ExpectedFile]) -> str | None:
        """What is wrong with a verified copy at its commit (paths-info sizes and hashes against
        `expected_files`), None when intact. A repo or commit that is gone is a problem too;
        transient and auth errors propagate: they say nothing about the copy."""
        try:
            # `compare` reads only `path_in_repo` and `digest`, which ExpectedFile has.
            verify_commit(self.hub, record.repo_id, record.commit_sha or "main",
                          cast("list[LocalFile]", expected))
        except VerificationError as exc:
            return exc.message
        except PermanentError as exc:
            if isinstance(exc, AuthError):
                raise
            return exc.message
        return None

    def reopen(self, record: Record, problem: str) -> Record:
        """A verified copy turned out damaged: upload it again from the local folder when that
        still holds this version (`pending`), else say so loudly (`failed`, permanent)."""
        detection = self.judge(ref_of(record))
        version = detection.version
        if detection.verdict is Verdict.NOT_YET or (
                version is not None and version.version_key == record.version_key):
            # NOT_YET: the folder is there but settling; the upload judges it again (and waits)
            # rather than calling the local copy gone.
            log.error("remote copy damaged; uploading it again from the local folder", extra={
                "folder": record.folder, "repo_id": record.repo_id, "error": problem})
            with self._store_lock:
                self.store.meta_set(RESEND_KEY + record.version_key, problem)
            return self._update(record, state=State.PENDING, attempts=0, permanent=False,
                                next_attempt_at=None, last_error=problem,
                                error_class=VerificationError.__name__)
        log.error("remote copy damaged and the local folder no longer holds this version: "
                  "nothing to upload it again from", extra={
                      "folder": record.folder, "repo_id": record.repo_id, "error": problem})
        return self._update(record, state=State.FAILED, permanent=True, next_attempt_at=None,
                            last_error=f"remote copy damaged, local copy gone: {problem}",
                            error_class=VerificationError.__name__)


def _message(record: Record) -> str:
    return "Final LoRA adapter" if record.kind is Kind.FINAL else (
        f"Checkpoint at step {record.step}")


def ref_of(record: Record) -> FolderRef:
    return FolderRef(record.kind, record.folder,
                     record.step if record.kind is Kind.CHECKPOINT else None)


def pending_work(records: list[Record]) -> list[Record]:
    """Records that still need an upload attempt (permanent failures need a human)."""
    return [r for r in records if r.state not in FINISHED and not r.permanent]


def send_order(files: Iterable[FileStat]) -> list[FileStat]:
    """The small files first (their first bytes leave at once, and hashing them costs
    nothing), then the large ones largest first. With LFS the largest file is the upload's
    long pole, and its sha256 must be known before its first byte: hashed first, at full speed,
    it starts sending before the bare client's, which hashes everything first. Hashed last,
    while the others were sending, it started later (1 GiB: 0.97 s against 0.57 s)."""
    return sorted(files, key=lambda s: (0, s.size, s.path) if s.size < LFS_ONLY_SIZE
                  else (1, -s.size, s.path))
