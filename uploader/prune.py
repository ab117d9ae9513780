"""Local pruning: free a checkpoint folder only once the Hub holds exactly its bytes.

    plan_prune(records, folders, policy)   pure: which folders may go, and why the rest stay
    Pruner.run_pass()                      facts -> plan -> per folder: re-check the remote copy
                                           -> re-check the folder and that no save is under way
                                           -> rename out of `checkpoint-*` -> `pruned` -> rmtree

A folder may go only when its current content is the version a `verified` record holds (same
files, sizes, mtimes and inodes), it is not among the newest `keep_last` checkpoint folders, not
the best by the metric (unless `prune_best`), and never the final adapter.

Why the timing cannot hurt the trainer: Trainer's rotation lists `checkpoint-*` and then stats
each folder, so a folder vanishing in between raises inside the trainer. Rotation runs at the
end of a save, and a save under way shows as a checkpoint folder the detector calls NOT_YET (no
marker yet, or not settled). The watcher asks for a pass right after it admits a completed
folder - the trainer has just finished its save and rotation - and the pass checks again that no
folder is NOT_YET immediately before each rename. A rename is atomic and takes microseconds; a
save that starts after that check writes a whole checkpoint before it rotates.

Crash safety: the rename is the commit point. `.pruning-<folder>-<key>` is outside rotation's
and detection's view, so a crash leaves either the intact folder or a folder nobody will resume
from; `recover()` at start removes such leftovers and records their version `pruned`.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.fsutil import fsync_dir
from shared.layout import Kind, list_folders
from uploader.detect import Verdict
from uploader.errors import UploaderError
from uploader.events import ExpectedFile, UploadResult
from uploader.pipeline import Pipeline
from uploader.readback import Wanted, read_back
from uploader.retention import DEFAULT_METRIC, LIVE, best_record
from uploader.state import Record, State

log = logging.getLogger(__name__)

PRUNING_PREFIX = ".pruning-"
# Characters of the version key kept in the renamed folder's name: enough to find its record.
KEY_CHARS = 16


@dataclass(frozen=True)
class FolderFacts:
    """One checkpoint folder as the detector sees it now."""

    name: str
    step: int
    verdict: Verdict
    version_key: str | None  # of the current content, when complete
    bytes: int = 0


@dataclass(frozen=True)
class PrunePolicy:
    keep_last: int = 1
    prune_best: bool = False
    metric: str = DEFAULT_METRIC
    deep: bool = False  # --prune-check deep: download and hash every file before deleting


@dataclass(frozen=True)
class PrunePlan:
    prune: tuple[tuple[FolderFacts, Record], ...]  # oldest first
    kept: tuple[tuple[str, str], ...]  # (folder, why it stays)
    blocked: str | None  # why nothing may be pruned right now

    @property
    def bytes(self) -> int:
        return sum(folder.bytes for folder, _ in self.prune)


def plan_prune(records: Iterable[Record], folders: Iterable[FolderFacts],
               policy: PrunePolicy) -> PrunePlan:
    """Which checkpoint folders may be deleted now. Pure: the property test drives this."""
    records = list(records)
    folders = sorted(folders, key=lambda f: f.step)
    writing = [f.name for f in folders if f.verdict is Verdict.NOT_YET]
    blocked = f"{writing[0]} is being written (a save is under way)" if writing else None
    newest = {f.name for f in folders[::-1][:policy.keep_last]}
    best = None if policy.prune_best else best_record(records, policy.metric, states=LIVE)
    by_key = {r.version_key: r for r in records}
    prune: list[tuple[FolderFacts, Record]] = []
    kept: list[tuple[str, str]] = []
    for folder in folders:
        record = by_key.get(folder.version_key or "")
        reason = _keep_reason(folder, record, newest, best)
        if reason is None and record is not None:
            prune.append((folder, record))
        else:
            kept.append((folder.name, reason or "not recorded"))
    return PrunePlan(tuple(prune), tuple(kept), blocked)


def _keep_reason(folder: FolderFacts, record: Record | None, newest: set[str],
                 best: Record | None) -> str | None:
    if folder.name in newest:
        return "among the newest"
    if best is not None and folder.name == best.folder:
        return f"best ({best.step})"
    if folder.verdict is not Verdict.COMPLETE or folder.version_key is None:
        return f"not complete ({folder.verdict})"
    if record is None:
        return "current content not recorded (changed since it was verified?)"
    if record.kind is not Kind.CHECKPOINT or record.folder != folder.name:
        return "not a checkpoint record"
    if record.state is not State.VERIFIED:
        return f"state {record.state}"
    if record.commit_sha is None:
        return "no verified commit of ours (restored from the Hub)"
    return None


class Outcome(enum.Enum):
    PRUNED = "pruned"
    KEPT = "kept"  # changed, vanished, or the remote could not be checked: maybe next pass
    REOPENED = "reopened"  # the remote copy is damaged: back to pending, uploaded again
    STOP = "stop"  # a save started: the pass ends, the next completion starts another


@dataclass
class PassResult:
    pruned: int = 0
    freed: int = 0
    reopened: int = 0


class Pruner:
    """The I/O around `plan_prune`, one pass at a time; also an `Events` listener."""

    def __init__(self, pipeline: Pipeline, policy: PrunePolicy, *, enabled: bool,
                 space: SpaceWatch | None = None,
                 run_ended: Callable[[], bool] = lambda: False) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.enabled = enabled
        self.space = space
        self.run_ended = run_ended
        self.output_dir = pipeline.config.output_dir
        self.due = threading.Event()  # the watcher's prune loop waits on this
        self._lock = threading.Lock()
        self._blocked: str | None = None

    def request(self) -> None:
        """A completion was admitted (the trainer just saved and rotated): run a pass."""
        self.due.set()

    # Events: once the run has ended no save can start, so each verification may free a folder.
    def verified(self, result: UploadResult) -> None:
        if self.enabled and self.run_ended():
            self.request()

    def failed(self, record: Record, error: UploaderError) -> None:
        pass

    def facts(self) -> list[FolderFacts]:
        facts = []
        for ref in list_folders(self.output_dir):
            if ref.kind is not Kind.CHECKPOINT or ref.step is None:
                continue
            detection = self.pipeline.judge(ref)
            if detection.verdict is Verdict.GONE:
                continue
            version = detection.version
            facts.append(FolderFacts(ref.name, ref.step, detection.verdict,
                                     version.version_key if version else None,
                                     version.total_bytes if version else 0))
        return facts

    def plan(self) -> PrunePlan:
        return plan_prune(self.pipeline.records(), self.facts(), self.policy)

    def check_space(self) -> None:
        # Building a plan stats every folder and reads every record: only when the warning
        # could change (free space is low, or was low and may have recovered).
        if self.space is not None and self.space.may_change():
            self.space.check(self.plan(), self.enabled)

    def run_pass(self) -> PassResult:
        """Prune what the plan allows; every folder is re-checked just before it goes."""
        result = PassResult()
        with self._lock:
            plan = self.plan()
            if self.space is not None:
                self.space.check(plan, self.enabled)
            log.debug("prune plan", extra={"candidates": [f.name for f, _ in plan.prune],
                                           "kept": dict(plan.kept), "blocked": plan.blocked})
            if not self.enabled or not plan.prune or self._waits(plan.blocked):
                return result
            for folder, record in plan.prune:
                outcome = self._prune_one(folder, record)
                if outcome is Outcome.STOP:
                    break
                result.pruned += outcome is Outcome.PRUNED
                result.freed += folder.bytes if outcome is Outcome.PRUNED else 0
                result.reopened += outcome is Outcome.REOPENED
        if result.pruned:
            log.info("prune pass done", extra={"pruned": result.pruned,
                                               "freed_bytes": result.freed})
        return result

    def _waits(self, blocked: str | None) -> bool:
        if blocked is not None and blocked != self._blocked:
            log.info("pruning waits: %s", blocked, extra={"reason": blocked})
        self._blocked = blocked
        return blocked is not None

    def _prune_one(self, folder: FolderFacts, record: Record) -> Outcome:
        remote = self._check_remote(record)
        if remote is not None:
            return remote
        # Just before the rename: no save under way, and the folder is still that version.
        fresh = {f.name: f for f in self.facts()}
        if any(f.verdict is Verdict.NOT_YET for f in fresh.values()):
            return Outcome.STOP
        now = fresh.get(folder.name)
        if now is None or now.version_key != record.version_key:
            log.info("not pruning: the folder changed or vanished since it was planned",
                     extra={"folder": folder.name})
            return Outcome.KEPT
        # Judging every folder took a moment: a save that began meanwhile shows as a new name.
        if {ref.name for ref in list_folders(self.output_dir)
                if ref.kind is Kind.CHECKPOINT} - set(fresh):
            return Outcome.STOP
        return self._remove(folder, record)

    def _check_remote(self, record: Record) -> Outcome | None:
        """None when the Hub still holds exactly what was verified; else why not to prune."""
        expected = self.pipeline.expected_files(record)
        if expected is None:
            return Outcome.KEPT
        try:
            problem = self.pipeline.recheck(record, expected)
            if problem is None and self.policy.deep:
                problem = self._read_back(record, expected)
        except UploaderError as exc:
            log.warning("not pruning: cannot check the remote copy now", extra={
                "folder": record.folder, "repo_id": record.repo_id, "error": exc.one_line()})
            return Outcome.KEPT
        if problem is not None:
            self.pipeline.reopen(record, problem)
            return Outcome.REOPENED
        return None

    def _read_back(self, record: Record, expected: list[ExpectedFile]) -> str | None:
        wanted = [Wanted(f.path_in_repo, f.digest.size, f.digest.sha256) for f in expected]
        with tempfile.TemporaryDirectory(prefix="prune-check-") as scratch:
            problems = read_back(self.pipeline.hub, record.repo_id, record.commit_sha or "main",
                                 wanted, Path(scratch))
        if not problems:
            log.info("remote copy read back before pruning", extra={
                "folder": record.folder, "repo_id": record.repo_id, "files": len(wanted)})
            return None
        return f"{record.repo_id}: read back: " + "; ".join(problems[:5])

    def _remove(self, folder: FolderFacts, record: Record) -> Outcome:
        source = self.output_dir / folder.name
        target = self.output_dir / f"{PRUNING_PREFIX}{folder.name}-{record.version_key[:KEY_CHARS]}"
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return Outcome.KEPT  # rotation got there first
        fsync_dir(self.output_dir)
        self.pipeline.update(record, state=State.PRUNED)
        shutil.rmtree(target, ignore_errors=True)
        log.info("pruned local checkpoint", extra={
            "folder": folder.name, "step": folder.step, "repo_id": record.repo_id,
            "freed_bytes": folder.bytes})
        return Outcome.PRUNED

    def recover(self) -> list[str]:
        """At start: finish prunes a crash interrupted after the rename."""
        finished = []
        for entry in sorted(self.output_dir.glob(f"{PRUNING_PREFIX}*")):
            name, _, key = entry.name.removeprefix(PRUNING_PREFIX).rpartition("-")
            for record in self.pipeline.records():
                if (record.folder == name and record.version_key.startswith(key)
                        and record.state is State.VERIFIED):
                    self.pipeline.update(record, state=State.PRUNED)
            shutil.rmtree(entry, ignore_errors=True)
            finished.append(entry.name)
            log.info("finished an interrupted prune", extra={"folder": name})
        return finished


class SpaceWatch:
    """Warns once each time free space on the output dir falls below a fraction."""

    def __init__(self, output_dir: Path, threshold: float,
                 disk_usage: Callable[[Path], tuple[int, int, int]] = shutil.disk_usage) -> None:
        self.output_dir = output_dir
        self.threshold = threshold
        self.disk_usage = disk_usage
        self.low = False

    def may_change(self) -> bool:
        """Whether `check` could log anything now (one cheap statvfs)."""
        total, _used, free = self.disk_usage(self.output_dir)
        return self.low or (free / total if total else 1.0) < self.threshold

    def check(self, plan: PrunePlan, pruning: bool) -> bool:
        total, _used, free = self.disk_usage(self.output_dir)
        fraction = free / total if total else 1.0
        low = fraction < self.threshold
        if low and not self.low:
            log.warning("free space on the output dir is low", extra={
                "free_bytes": free, "free_fraction": round(fraction, 4),
                "threshold": self.threshold, "prunable_bytes": plan.bytes,
                "prunable_folders": [f.name for f, _ in plan.prune],
                "hint": "pruning frees these as they qualify" if pruning else
                        "watch --prune would free these"})
        elif self.low and not low:
            log.info("free space on the output dir recovered",
                     extra={"free_bytes": free, "free_fraction": round(fraction, 4)})
        self.low = low
        return low
