"""Rounds, as the pipeline keeps them (README, How it works 7): a 429 announcing a wait beyond
`--max-rate-limit-wait` postpones the checkpoint until the Hub's time instead of sleeping, and a
round that ends in a transient failure leaves the checkpoint `failed`, retried in later rounds
with a doubling backoff capped at `--round-backoff-max`.

The pipeline runs against devhub through the real client, with a fake clock for the pipeline
and the state: what the tests read is the `next_attempt_at` each round recorded.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from devhub.testing import DevHub
from shared.layout import list_folders
from shared.run_info import read_run_info, start_run
from tests.support.checkpoints import write_checkpoint
from uploader.detect import CompletionDetector
from uploader.hub import HubClient
from uploader.pipeline import Pipeline, PipelineConfig
from uploader.retry import RetryPolicy
from uploader.stage import Stager
from uploader.state import Record, State, StateStore

from .conftest import ALICE, HubClientFactory

START = 1_900_000_000.0  # the fake clock's epoch seconds


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def pipeline_of(out: Path, hub: HubClient, clock: Clock, request: pytest.FixtureRequest,
                **config: float) -> Pipeline:
    """A pipeline over one fresh checkpoint-50 in `out`, its state on the fake clock."""
    run = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=run.run_id)
    store = StateStore.open(out / ".uploader", clock=clock)
    request.addfinalizer(store.close)
    info = read_run_info(out)
    assert info is not None
    settings = PipelineConfig(output_dir=out, namespace=ALICE,
                              prefix=f"rounds-{uuid.uuid4().hex[:8]}", run_id=info.run_id,
                              source_host="test", **config)  # type: ignore[arg-type]
    return Pipeline(settings, store, CompletionDetector(out, 0.0),
                    Stager(out / ".uploader" / "staging"), hub, clock=clock)


def admitted(pipeline: Pipeline) -> Record:
    (ref,) = list_folders(pipeline.config.output_dir)
    pipeline.observe(ref)
    (record,) = pipeline.records()
    assert record.state is State.PENDING
    return record


def commits_to(hub: DevHub, repo_id: str) -> int:
    return sum(1 for e in hub.log()
               if e["method"] == "POST" and "/commit/" in e["path"] and repo_id in e["path"])


@pytest.mark.parametrize("announce", [
    {"retry_after": 7200},  # Retry-After: 7200
    {"ratelimit": 7200},  # RateLimit: "api";r=0;t=7200
], ids=["retry-after", "ratelimit-header"])
def test_a_wait_announced_beyond_the_cap_postpones_the_checkpoint_until_then(
        tmp_path: Path, devhub: DevHub, make_hub_client: HubClientFactory,
        request: pytest.FixtureRequest, announce: dict[str, int]) -> None:
    clock = Clock()
    slept: list[float] = []
    hub = make_hub_client(policy=RetryPolicy(attempts=3, initial_wait=0.0, max_wait=0.0,
                                             jitter=0.0, max_rate_limit_wait=60.0),
                          sleep=slept.append)
    pipeline = pipeline_of(tmp_path / "out", hub, clock, request)
    record = admitted(pipeline)
    devhub.add_faults({"action": "status", "status": 429, "path": "/commit/", **announce})

    started = time.monotonic()
    record = pipeline.upload(record)
    assert time.monotonic() - started < 30, "the announced two hours were slept"
    assert slept == [], "a wait beyond --max-rate-limit-wait must not be slept"
    assert record.state is State.PENDING and not record.permanent, record
    assert record.attempts == 0, "a rate limit is no failed attempt"
    assert record.next_attempt_at is not None
    assert abs(record.next_attempt_at - (START + 7200)) <= 1, record.next_attempt_at - START
    assert commits_to(devhub, record.repo_id) == 1, "the 429 ended the attempt at once"
    # Postponed, not dropped: not due before the Hub's time, due from then on.
    clock.now = START + 7200 - 2
    assert pipeline.due() == []
    devhub.clear_faults()
    clock.now = START + 7200 + 1
    (due,) = pipeline.due()
    assert pipeline.upload(due).state is State.VERIFIED


def test_a_failed_round_is_retried_in_later_rounds_with_a_doubling_capped_backoff(
        tmp_path: Path, devhub: DevHub, make_hub_client: HubClientFactory,
        request: pytest.FixtureRequest) -> None:
    clock = Clock()
    attempts_per_round = 2
    hub = make_hub_client(policy=RetryPolicy.immediate(attempts_per_round))
    pipeline = pipeline_of(tmp_path / "out", hub, clock, request, round_backoff=10.0,
                           round_backoff_max=35.0)
    record = admitted(pipeline)
    devhub.add_faults({"action": "status", "status": 503, "path": "/commit/"})  # an outage

    waits = []
    for round_no in range(1, 5):
        before = commits_to(devhub, record.repo_id)
        record = pipeline.upload(record)
        assert record.state is State.FAILED and not record.permanent, record
        assert record.attempts == round_no and "503" in (record.last_error or ""), record
        assert commits_to(devhub, record.repo_id) - before == attempts_per_round
        assert record.next_attempt_at is not None
        waits.append(record.next_attempt_at - clock.now)
        # Not retried before its backoff has passed; due once it has (the next round).
        clock.now = record.next_attempt_at - 0.5
        assert pipeline.due() == []
        clock.now = record.next_attempt_at
        (record,) = pipeline.due()
    assert waits == [10, 20, 35, 35]  # --round-backoff, doubled each round, --round-backoff-max

    devhub.clear_faults()  # the outage is over: the next round needs no human
    done = pipeline.upload(record)
    assert done.state is State.VERIFIED and done.attempts == 5, done
