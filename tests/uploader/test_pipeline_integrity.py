"""The pipeline against devhub through the real client: what may and may not become `verified`."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd

from shared.layout import FolderRef, Kind, list_folders
from shared.run_info import read_run_info, start_run
from tests.support.checkpoints import write_checkpoint
from uploader.detect import CompletionDetector
from uploader.hub import HubClient, LocalFile, Preuploaded
from uploader.pipeline import Pipeline, PipelineConfig
from uploader.stage import Stager
from uploader.state import State, StateStore

from .conftest import ALICE, HubClientFactory

SETTLE_S = 0.0


class RewritingHub(HubClient):
    """The real client, with the trainer rewriting a staged file in place (same inode, same
    size, new bytes) right after the upload read it: the window hashes cannot see."""

    target: Path | None = None

    def commit(self, repo_id: str, files: list[LocalFile], message: str,
               replace: Sequence[str] = (), uploaded: Preuploaded | None = None) -> str:
        sha = super().commit(repo_id, files, message, replace, uploaded)
        if self.target is not None:
            size = self.target.stat().st_size
            with open(self.target, "r+b") as fh:  # open("w") on the same path: same inode
                fh.write(bytes(size))
            self.target = None
        return sha


def build(out: Path, hub: HubClient, request: pytest.FixtureRequest, *,
          clock: Callable[[], float] = time.time, **config: object) -> Pipeline:
    """A pipeline over `out` (whose run info must exist) with a state closed after the test."""
    store = StateStore.open(out / ".uploader", clock=clock)
    request.addfinalizer(store.close)
    run_id = read_run_info(out).run_id
    settings = PipelineConfig(output_dir=out, namespace=ALICE,
                              prefix=f"integrity-{uuid.uuid4().hex[:8]}", run_id=run_id,
                              source_host="test", **config)  # type: ignore[arg-type]
    return Pipeline(settings, store, CompletionDetector(out, SETTLE_S),
                    Stager(out / ".uploader" / "staging"), hub, clock=clock)


def one_checkpoint(out: Path) -> None:
    one_checkpoint_of(out)


def one_checkpoint_of(out: Path, **sizes: int) -> None:
    run = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=run.run_id, **sizes)  # type: ignore[arg-type]


@pytest.fixture(params=[True, False], ids=["xet", "lfs"])
def pipeline(tmp_path: Path, make_hub_client: HubClientFactory, request) -> Pipeline:
    out = tmp_path / "out"
    one_checkpoint(out)
    base = make_hub_client()
    hub = RewritingHub(replace(base.config, use_xet=request.param, xet_fallback=False),
                       base.policy)
    return build(out, hub, request)


def test_a_file_rewritten_in_place_during_the_upload_is_never_verified(
        pipeline: Pipeline) -> None:
    hub = pipeline.hub
    assert isinstance(hub, RewritingHub)
    (ref,) = [r for r in list_folders(pipeline.config.output_dir) if r.name == "checkpoint-50"]
    pipeline.observe(ref)
    (record,) = pipeline.records()
    staged = pipeline.stager.get(record.version_key)
    assert staged is not None
    hub.target = staged.path / "optimizer.pt"
    after = pipeline.upload(record)
    assert after.state is not State.VERIFIED, after
    assert after.state is State.SUPERSEDED and "changed" in (after.last_error or "")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, only what was written survives."""


def test_committed_is_recorded_before_the_content_check_and_is_never_pruned(
        pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, request) -> None:
    from uploader import pipeline as pipeline_module
    from uploader.cli.status import rows_of, summary
    from uploader.prune import FolderFacts, PrunePolicy, plan_prune

    (ref,) = [r for r in list_folders(pipeline.config.output_dir) if r.name == "checkpoint-50"]
    pipeline.observe(ref)
    (record,) = pipeline.records()

    def killed(*args: object) -> list[str]:
        raise Killed

    monkeypatch.setattr(pipeline_module, "content_problems", killed)
    with pytest.raises(Killed):
        pipeline.upload(record)
    (committed,) = pipeline.store.all()
    assert committed.state is State.COMMITTED and committed.commit_sha, committed
    assert summary(rows_of([committed])).startswith("0 verified, 1 committed, 0 pending")
    facts = FolderFacts(ref.name, 50, pipeline.judge(ref).verdict, committed.version_key)
    plan = plan_prune([committed], [facts], PrunePolicy(keep_last=0, prune_best=True))
    assert not plan.prune and plan.kept == ((ref.name, "state committed"),)
    # The next run picks the interrupted row up and verifies it (same repo, no new repo).
    monkeypatch.undo()
    (due,) = pipeline.due()
    done = pipeline.upload(due)
    assert done.state is State.VERIFIED and done.repo_id == committed.repo_id, done


class SilentRewriteHub(HubClient):
    """The real client, with a staged file rewritten in place after it was hashed, just before
    its bytes are first sent, and its mtime put back: the stat check cannot see it, only the
    server's hash of the bytes can."""

    target: Path | None = None

    def _rewrite(self) -> None:
        if self.target is not None:
            st = self.target.stat()
            with open(self.target, "r+b") as fh:
                fh.write(b"\xff" * st.st_size)
            os.utime(self.target, ns=(st.st_atime_ns, st.st_mtime_ns))
            self.target = None

    def preupload(self, repo_id: str, operations: Sequence[CommitOperationAdd],
                  use_xet: bool, total: int = 0) -> None:
        if self.target is not None and any(
                op.path_in_repo == self.target.name for op in operations):
            self._rewrite()
        super().preupload(repo_id, operations, use_xet, total)

    def commit(self, repo_id: str, files: list[LocalFile], message: str,
               replace: Sequence[str] = (), uploaded: Preuploaded | None = None) -> str:
        self._rewrite()
        return super().commit(repo_id, files, message, replace, uploaded)


def test_bytes_that_do_not_match_their_hash_are_rehashed_and_uploaded_again(
        tmp_path: Path, make_hub_client: HubClientFactory, request) -> None:
    # devhub hashes LFS uploads, as a plain LFS server can: it answers 400 "does not match".
    out = tmp_path / "out"
    one_checkpoint(out)
    base = make_hub_client()
    hub = SilentRewriteHub(replace(base.config, use_xet=False, xet_fallback=False), base.policy)
    pipeline = build(out, hub, request)
    (ref,) = [r for r in list_folders(out) if r.name == "checkpoint-50"]
    pipeline.observe(ref)
    (record,) = pipeline.records()
    staged = pipeline.stager.get(record.version_key)
    assert staged is not None
    hub.target = staged.path / "optimizer.pt"
    first = pipeline.upload(record)
    assert first.state is State.PENDING and not first.permanent, first
    assert "does not match" in (first.last_error or "")
    second = pipeline.upload(first)
    assert second.state is State.VERIFIED, second


def test_rate_limits_that_announce_no_wait_back_off_further_each_time(
        tmp_path: Path, devhub, make_hub_client: HubClientFactory, request) -> None:
    out = tmp_path / "out"
    one_checkpoint(out)
    now = [1_000_000.0]
    pipeline = build(out, make_hub_client(), request, clock=lambda: now[0], round_backoff=10,
                     round_backoff_max=35)
    (ref,) = [r for r in list_folders(out) if r.name == "checkpoint-50"]
    pipeline.observe(ref)
    (record,) = pipeline.records()
    devhub.add_faults({"action": "status", "status": 429, "path": "/commit/"})
    waits = []
    for _ in range(4):
        record = pipeline.upload(record)
        assert record.state is State.PENDING and not record.permanent
        waits.append(record.next_attempt_at - now[0])
    assert waits == [10, 20, 35, 35]  # doubling from --round-backoff, capped at its max
    devhub.clear_faults()
    assert pipeline.upload(record).state is State.VERIFIED


def test_two_versions_saved_in_the_same_second_get_two_repos(
        tmp_path: Path, make_hub_client: HubClientFactory, request) -> None:
    out = tmp_path / "out"
    run = start_run(out, base_model="tiny", resume=False)
    same_second = datetime(2026, 12, 1, 9, 0, 0, 250_000, tzinfo=UTC)
    pipeline = build(out, make_hub_client(), request)
    ref = FolderRef(Kind.CHECKPOINT, "checkpoint-50", 50)
    write_checkpoint(out, 50, run_id=run.run_id, now=same_second)
    pipeline.observe(ref)
    # A restarted run without resume re-saves the step in place, within the same second.
    write_checkpoint(out, 50, run_id=run.run_id, seed=1,
                     now=same_second.replace(microsecond=900_000))
    pipeline.observe(ref)
    first, second = pipeline.records()
    assert first.version_key != second.version_key
    assert first.repo_id.endswith("-checkpoint-50-20261201_090000")
    assert second.repo_id.endswith("-checkpoint-50-20261201_090001")
