"""Pruning and state logic under random interleavings, against an in-memory model of the Hub.

The system under test is the real thing: `Pipeline` (detection, staging, upload, verification,
`reopen`), the SQLite state, `Pruner` (with `plan_prune`) and `verify`'s check-and-repair, over
real folders written like Trainer's. Only the Hub is a model (`ModelHub`): it stores the content
hash of every byte it is sent, and can fail a commit, keep a damaged copy, lose a commit's
answer, or have a file dropped or corrupted later. Crashes are exceptions that unwind past the
uploader (like kill -9, nothing after them runs); a restart rebuilds every object from the state
and the disk, as `watch` does.

Properties, checked around every prune pass:
- a folder leaves the `checkpoint-*` namespace only when the Hub holds every one of its bytes,
  undamaged (the PEFT README excepted: the uploader replaces it with its own card);
- never one of the newest `keep_last` folders, never the final adapter, never during a save;
- a crash inside a prune leaves no `.pruning-*` folder once restarted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from shared.hashing import git_blob_sha1
from shared.layout import FINAL_DIRNAME, Kind, checkpoint_name, list_folders
from shared.manifest import Manifest
from shared.markers import build_marker, write_marker
from tests.support.checkpoints import folder_bytes, write_checkpoint
from uploader.cli import verify as verify_cli
from uploader.detect import CompletionDetector, Verdict
from uploader.errors import PermanentError, TransientError
from uploader.hub import LocalFile, RemoteFile
from uploader.pipeline import Pipeline, PipelineConfig
from uploader.prune import (
    PRUNING_PREFIX,
    FolderFacts,
    PrunePlan,
    PrunePolicy,
    Pruner,
    SpaceWatch,
    plan_prune,
)
from uploader.retention import LIVE, Action, RemoteRepo, best_record, plan_cleanup
from uploader.stage import Stager
from uploader.state import Record, State, StateStore

RUN_ID = "00000000-0000-4000-8000-000000000000"
GENERATED = "README.md"  # the trainer's card; the uploader uploads its own instead
LFS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
NEVER_SETTLES = 1e9  # a folder without its marker is a save under way, for as long as it lasts
# Upload attempts: mostly fine; else refused, a damaged copy kept, or a crash at either end.
OUTCOMES = ("ok",) * 6 + ("fail", "damaged", "crash-commit", "crash-verify")
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # tmpfs: fsync costs nothing


class Crash(BaseException):
    """kill -9: not an Exception, so no `except Exception` in the uploader catches it."""


@dataclass(frozen=True)
class Stored:
    size: int
    sha256: str  # of the bytes received
    git_sha1: str
    lfs: bool
    damaged: bool = False
    data: bytes = b""  # what a download returns (flipped when damaged)

    def view(self, path: str) -> RemoteFile:
        """What paths-info reports: a damaged file shows a hash that is not its content's."""
        bad = "0" * 64 if self.damaged else None
        if self.lfs:
            return RemoteFile(path, self.size, None, bad or self.sha256, True)
        return RemoteFile(path, self.size, bad[:40] if bad else self.git_sha1, None, False)


class ModelHub:
    """The HubClient surface the pipeline uses, in memory. Flags make the next call misbehave."""

    def __init__(self) -> None:
        self.commits: dict[str, dict[str, dict[str, Stored]]] = {}  # repo -> sha -> tree
        self.heads: dict[str, str] = {}
        self.fail_next = False  # the commit is refused (a 503 after retries)
        self.damage_next = False  # the commit lands with one file corrupted
        self.crash_at: str | None = None  # "commit" (answer lost) or "verify"

    def repo_url(self, repo_id: str) -> str:
        return f"https://hub.test/{repo_id}"

    def repo_exists(self, repo_id: str) -> bool:
        return repo_id in self.heads

    def ensure_repo(self, repo_id: str) -> None:
        if repo_id not in self.heads:
            self.commits[repo_id] = {"init": {}}
            self.heads[repo_id] = "init"

    def head_sha(self, repo_id: str) -> str:
        return self.heads[repo_id]

    def list_files(self, repo_id: str, revision: str | None = None) -> dict[str, RemoteFile]:
        tree = self.commits[repo_id][revision or self.heads[repo_id]]
        return {path: stored.view(path) for path, stored in tree.items()}

    def download(self, repo_id: str, revision: str, path: str, dest_dir: Path) -> Path:
        stored = self.commits[repo_id][revision][path]
        target = dest_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(b ^ 0xFF for b in stored.data) if stored.damaged
                           else stored.data)
        return target

    def uses_xet(self, repo_id: str) -> bool:
        return False

    def preupload(self, repo_id: str, operations: Sequence[object], use_xet: bool,
                  total: int = 0) -> None:
        pass  # the model reads the bytes at commit time

    def commit(self, repo_id: str, files: list[LocalFile], message: str,
               replace: Sequence[str] = (), uploaded: object = None) -> str:
        if self.fail_next:
            self.fail_next = False
            raise TransientError("commit refused (model)")
        tree = dict(self.commits[repo_id][self.heads[repo_id]])
        for f in files:
            data = f.local_path.read_bytes() if f.local_path is not None else f.data or b""
            tree[f.path_in_repo] = Stored(len(data), hashlib.sha256(data).hexdigest(),
                                          git_blob_sha1(data), f.path_in_repo.endswith(LFS_SUFFIXES),
                                          data=data)
        if self.damage_next:
            self.damage_next = False
            first = sorted(tree)[0]
            tree[first] = dataclasses.replace(tree[first], damaged=True)
        sha = hashlib.sha1(repr((repo_id, len(self.commits[repo_id]))).encode()).hexdigest()
        self.commits[repo_id][sha] = tree
        self.heads[repo_id] = sha
        self._maybe_crash("commit")
        return sha

    def paths_info(self, repo_id: str, revision: str, paths: list[str]) -> dict[str, RemoteFile]:
        self._maybe_crash("verify")
        tree = self.commits.get(repo_id, {}).get(revision)
        if tree is None:
            raise PermanentError(f"{repo_id}@{revision}: not found (model)")
        return {p: tree[p].view(p) for p in paths if p in tree}

    def damage(self, index: int, drop: bool) -> None:
        """Corrupt or drop one stored file of a repo's head, in place (as devhub does)."""
        repos = sorted(r for r, head in self.heads.items() if self.commits[r][head])
        if not repos:
            return
        repo = repos[index % len(repos)]
        tree = self.commits[repo][self.heads[repo]]
        path = sorted(tree)[index % len(tree)]
        if drop:
            del tree[path]
        else:
            tree[path] = dataclasses.replace(tree[path], damaged=True)

    def holds(self, files: dict[str, bytes]) -> bool:
        """Some repo's head holds every file with exactly these bytes, undamaged."""
        wanted = {p: hashlib.sha256(b).hexdigest() for p, b in files.items() if p != GENERATED}
        for repo, head in self.heads.items():
            tree = self.commits[repo][head]
            if all(p in tree and not tree[p].damaged and tree[p].sha256 == sha
                   for p, sha in wanted.items()):
                return True
        return False

    def _maybe_crash(self, where: str) -> None:
        if self.crash_at == where:
            self.crash_at = None
            raise Crash(where)


class Uploader:
    """What `open_pipeline` + `watch` assemble, minus the network: rebuilt on each restart."""

    def __init__(self, out: Path, hub: ModelHub, policy: PrunePolicy, clock: list[float]) -> None:
        state_dir = out / ".uploader"
        self.store = StateStore.open(state_dir, clock=lambda: clock[0])
        detector = CompletionDetector(out, NEVER_SETTLES)
        stager = Stager(state_dir / "staging")
        stager.reconcile({r.version_key for r in self.store.all()})
        config = PipelineConfig(output_dir=out, namespace="alice", prefix="run",
                                run_id=RUN_ID, source_host="test")
        self.pipeline = Pipeline(config, self.store, detector, stager, hub,  # type: ignore[arg-type]
                                 clock=lambda: clock[0])
        self.pruner = Pruner(self.pipeline, policy, enabled=True)
        self.pruner.recover()

    def close(self) -> None:
        self.store.close()


def checkpoint_folders(out: Path) -> dict[str, int]:
    return {ref.name: ref.step or 0 for ref in list_folders(out) if ref.name != FINAL_DIRNAME}


class PruneModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="prune-model-", dir=SCRATCH))
        self.out = self.root / "out"
        self.out.mkdir()
        self.hub = ModelHub()
        self.clock = [1_000_000.0]
        self.step = 0
        self.saving: str | None = None  # the folder Trainer is writing now
        self.final_written = False
        self.policy = PrunePolicy()
        self.uploader: Uploader | None = None

    @initialize(keep_last=st.integers(0, 2), prune_best=st.booleans(),
                history=st.lists(st.floats(0.5, 3.0), max_size=5))
    def start(self, keep_last: int, prune_best: bool, history: list[float]) -> None:
        """An uploader on a run that already saved (and uploaded) a few checkpoints."""
        self.policy = PrunePolicy(keep_last=keep_last, prune_best=prune_best)
        self.uploader = Uploader(self.out, self.hub, self.policy, self.clock)
        for eval_loss in history:
            self.save(eval_loss, None, "finish", None)  # type: ignore[arg-type]
        self.up.pipeline.scan()
        for _ in history:
            self.upload("ok")

    @property
    def up(self) -> Uploader:
        assert self.uploader is not None
        return self.uploader

    def teardown(self) -> None:
        if self.uploader is not None:
            self.uploader.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the trainer ---------------------------------------------------------------------
    @precondition(lambda self: not self.final_written)
    @rule(eval_loss=st.floats(0.5, 3.0), keep=st.none() | st.integers(1, 3),
          how=st.sampled_from(["finish"] * 8 + ["half", "rewrite", "final"]), data=st.data())
    def save(self, eval_loss: float, keep: int | None, how: str, data: st.DataObject) -> None:
        """Trainer saves the next checkpoint; "half" leaves it half written (a save under
        way); "rewrite" saves an existing step again in place (a restart without resume);
        "final" ends training with the final adapter."""
        if how == "final" and self.saving is None and self.step:
            write_checkpoint(self.out, self.step, final=True, adapter_bytes=32)
            self.final_written = True
            return
        if how == "rewrite" and self.saving is None and checkpoint_folders(self.out):
            step = data.draw(st.sampled_from(sorted(checkpoint_folders(self.out).values())))
            write_checkpoint(self.out, step, seed=data.draw(st.integers(1, 9)), eval_loss=1.0,
                             adapter_bytes=48, optimizer_bytes=data.draw(st.integers(40, 90)))
            return
        if self.saving is None:
            self.step += 10
            self.saving = checkpoint_name(self.step)
            write_checkpoint(self.out, self.step, marker=False, eval_loss=eval_loss,
                             adapter_bytes=32, optimizer_bytes=32)
        if how != "half":
            self._finish_save(keep)

    def _finish_save(self, keep: int | None) -> None:
        """Rotation (save_total_limit=keep) runs at the end of the save, then the marker."""
        assert self.saving is not None
        if keep is not None:
            folders = sorted(checkpoint_folders(self.out).items(), key=lambda kv: kv[1])
            for name, _ in folders[:-keep]:
                shutil.rmtree(self.out / name)
        write_marker(self.out, build_marker(self.out, self.saving, run_id=RUN_ID, step=self.step))
        self.saving = None

    # -- the uploader --------------------------------------------------------------------
    @rule(outcomes=st.lists(st.sampled_from(OUTCOMES), max_size=4),
          prune=st.sampled_from([True, True, True, False]))
    def watch_round(self, outcomes: list[str], prune: bool) -> None:
        """What the watcher's loops do: detect, one upload attempt per outcome, maybe prune."""
        self.up.pipeline.scan()
        for outcome in outcomes:
            self.upload(outcome)
        if prune:
            self.prune_pass(False)

    def upload(self, outcome: str) -> None:
        self.clock[0] += 10_000  # past any backoff
        self.hub.fail_next = outcome == "fail"
        self.hub.damage_next = outcome == "damaged"
        self.hub.crash_at = outcome.removeprefix("crash-") if outcome.startswith("crash") else None
        record = self.up.pipeline.claim()
        try:
            if record is not None:
                self.up.pipeline.upload(record)
                self.up.pipeline.release(record)
        except Crash:
            self.restart()
        finally:
            self.hub.fail_next = self.hub.damage_next = False
            self.hub.crash_at = None

    @rule(index=st.integers(0, 50), drop=st.booleans())
    def damage_remote(self, index: int, drop: bool) -> None:
        self.hub.damage(index, drop)

    @rule()
    def restart(self) -> None:
        self.up.close()
        self.uploader = Uploader(self.out, self.hub, self.policy, self.clock)
        assert not list(self.out.glob(f"{PRUNING_PREFIX}*")), "recover() left a .pruning dir"

    @rule()
    def verify_on_demand(self) -> None:
        tally = verify_cli.check_all(self.up.pipeline, False, self.root / "scratch", _never())
        verify_cli.repair(self.up.pipeline, tally, _never(), self.root / "scratch")

    @rule(crash_after_rename=st.booleans())
    def prune_pass(self, crash_after_rename: bool) -> None:
        before = {name: folder_bytes(self.out / name) for name in checkpoint_folders(self.out)}
        steps = checkpoint_folders(self.out)
        final = folder_bytes(self.out / FINAL_DIRNAME) if self.final_written else None
        if crash_after_rename:
            self.up.pipeline.update = _crash  # type: ignore[method-assign]
        try:
            self.up.pruner.run_pass()
        except Crash:
            self.restart()
        gone = set(before) - set(checkpoint_folders(self.out))
        self._check_pruned(gone, before, steps)
        if final is not None:
            assert folder_bytes(self.out / FINAL_DIRNAME) == final, "the final adapter changed"

    def _check_pruned(self, gone: Iterable[str], before: dict[str, dict[str, bytes]],
                      steps: dict[str, int]) -> None:
        newest = sorted(steps.values(), reverse=True)[:self.policy.keep_last]
        for name in gone:
            assert self.saving is None, f"{name} pruned while {self.saving} was being saved"
            assert steps[name] not in newest, f"{name} is among the newest {newest}"
            assert self.hub.holds(before[name]), f"{name} pruned but not intact on the Hub"


def _crash(*args: object, **kwargs: object) -> None:
    raise Crash("after rename")


def _never() -> threading.Event:
    return threading.Event()


PruneModel.TestCase.settings = settings(
    max_examples=500, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_prune_model = PruneModel.TestCase


def test_model_hub_holds_only_exact_undamaged_bytes() -> None:
    """The oracle itself can say no (else the property above could never fail)."""
    hub = ModelHub()
    hub.ensure_repo("a/r")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.bin"
        path.write_bytes(b"abc")
        hub.commit("a/r", [LocalFile("x.bin", None, local_path=path)], "m")  # type: ignore[arg-type]
    assert hub.holds({"x.bin": b"abc", GENERATED: b"anything"})
    assert not hub.holds({"x.bin": b"abd"})
    assert not hub.holds({"x.bin": b"abc", "y": b""})
    hub.damage(0, drop=False)
    assert not hub.holds({"x.bin": b"abc"})


# -- the decision rules one by one ------------------------------------------------------------
def record(step: int, state: State = State.VERIFIED, loss: float | None = None,
           key: str | None = None, folder: str | None = None) -> Record:
    return Record(
        id=step, version_key=key or f"k{step}", folder=folder or checkpoint_name(step),
        kind=Kind.CHECKPOINT, step=step, run_id=RUN_ID, repo_id=f"alice/run-checkpoint-{step}",
        timestamp="", state=state, attempts=1, last_error=None, error_class=None,
        permanent=False, next_attempt_at=None, bytes=10, files=(), detected_at=0.0,
        completed_at=None, uploaded_at=None, verified_at=None, upload_seconds=None,
        commit_sha="c" * 40, url=None, metrics={} if loss is None else {"eval_loss": loss},
        origin_repo=None, staged=False)


def facts(step: int, verdict: Verdict = Verdict.COMPLETE, key: str | None = None) -> FolderFacts:
    return FolderFacts(checkpoint_name(step), step, verdict, key or f"k{step}", 100)


def pruned(plan: PrunePlan) -> list[str]:
    return [folder.name for folder, _ in plan.prune]


def test_plan_keeps_the_newest_the_best_and_whatever_is_not_verified_as_it_is() -> None:
    records = [record(10, loss=2.0), record(20, loss=1.0), record(30, State.FAILED),
               record(40, loss=1.5, key="old-40"), record(50, loss=1.8), record(60, loss=1.9)]
    folders = [facts(10), facts(20), facts(30), facts(40), facts(50), facts(60)]
    plan = plan_prune(records, folders, PrunePolicy(keep_last=1))
    # 20 is the best, 30 failed, 40 changed since it was verified, 60 is the newest.
    assert pruned(plan) == ["checkpoint-10", "checkpoint-50"]
    assert plan.bytes == 200 and plan.blocked is None
    assert pruned(plan_prune(records, folders, PrunePolicy(keep_last=1, prune_best=True))) == [
        "checkpoint-10", "checkpoint-20", "checkpoint-50"]
    assert pruned(plan_prune(records, folders, PrunePolicy(keep_last=3))) == ["checkpoint-10"]


def test_the_best_counts_unverified_checkpoints_and_ignores_nan() -> None:
    records = [record(10, loss=2.0), record(20, loss=1.0), record(30, State.PENDING, loss=0.5),
               record(40, loss=float("nan"))]
    folders = [facts(10), facts(20), facts(30), facts(40)]
    assert pruned(plan_prune(records, folders, PrunePolicy(keep_last=1))) == [
        "checkpoint-10", "checkpoint-20"]
    assert best_record(records).step == 20  # type: ignore[union-attr]
    assert best_record(records, states=LIVE).step == 30  # type: ignore[union-attr]


def test_plan_is_blocked_while_a_save_is_under_way() -> None:
    records = [record(10), record(20), record(30)]
    plan = plan_prune(records, [facts(10), facts(20), facts(30, Verdict.NOT_YET, key="-")],
                      PrunePolicy(keep_last=0))
    assert plan.blocked and "checkpoint-30" in plan.blocked
    assert pruned(plan) == ["checkpoint-10", "checkpoint-20"]  # what it would free, for the log


def test_free_space_warning_once_per_crossing(caplog) -> None:
    usage = iter([(100, 95, 5), (100, 96, 4), (100, 50, 50), (100, 99, 1)])
    watch = SpaceWatch(Path("."), 0.1, disk_usage=lambda _p: next(usage))
    plan = PrunePlan(((facts(10), record(10)),), (), None)
    with caplog.at_level(logging.INFO, logger="uploader.prune"):
        assert [watch.check(plan, pruning=False) for _ in range(4)] == [True, True, False, True]
    low = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(low) == 2 and low[0].prunable_bytes == 100  # type: ignore[attr-defined]
    assert "watch --prune" in low[0].hint  # type: ignore[attr-defined]


def remote(step: int | None, run_id: str = RUN_ID, loss: float | None = 1.0,
           kind: Kind = Kind.CHECKPOINT, problem: str | None = None) -> RemoteRepo:
    manifest = None if problem else Manifest(
        run_id=run_id, step=step or 0, kind=kind, files=(), source_host="", folder="",
        created_at="", metrics={} if loss is None else {"eval_loss": loss})
    name = f"final-{step}" if kind is Kind.FINAL else f"checkpoint-{step}"
    return RemoteRepo(f"alice/run-{name}-{run_id[:4]}", kind, step, manifest, problem)


def test_cleanup_plan_never_deletes_finals_other_runs_or_unreadable_repos() -> None:
    repos = [remote(10, loss=2.0), remote(20, loss=1.0), remote(30, loss=None),
             remote(40, loss=1.5), remote(50, loss=1.7), remote(60, kind=Kind.FINAL),
             remote(15, run_id="11111111-0000-4000-8000-000000000000", loss=3.0),
             remote(70, problem="manifest unreadable")]
    items = plan_cleanup(repos, RUN_ID, keep_best=1, keep_latest=1)
    doomed = sorted(i.repo.step or 0 for i in items if i.action is Action.DELETE)
    assert doomed == [10, 30, 40]  # 20 best, 50 newest, 60 final, 15 other run, 70 unreadable
    assert len(items) == len(repos)
    none = plan_cleanup(repos, RUN_ID, keep_best=0, keep_latest=0)
    assert sorted(i.repo.step or 0 for i in none if i.action is Action.DELETE) == [
        10, 20, 30, 40, 50]


def test_the_model_prunes_when_nothing_is_in_the_way() -> None:
    """The harness itself: a plain run prunes, so the properties above are not vacuous."""
    machine = PruneModel()
    try:
        machine.start(keep_last=1, prune_best=False, history=[])
        for loss in (2.0, 1.0, 1.5, 1.7):
            machine.save(loss, None, "finish", None)  # type: ignore[arg-type]
            machine.watch_round(["ok"], prune=True)
        assert sorted(checkpoint_folders(machine.out)) == ["checkpoint-20", "checkpoint-40"]
        states = {r.folder: r.state for r in machine.up.pipeline.records()}
        assert states["checkpoint-10"] is State.PRUNED and states["checkpoint-30"] is State.PRUNED
    finally:
        machine.teardown()
