"""Client-side pacing (`uploader.pacing`) and how HubClient meets the Hub's rate limits:
429s with an announced wait are waited out without using up attempts, and a pacer keeps a
client under a limit so that no 429 happens at all (against devhub's rate-limit mode)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhub.testing import DevHub
from shared.hashing import digest_bytes
from tests.uploader.conftest import ALICE, ALICE_TOKEN, TEST_CONNECT_TIMEOUT, TEST_READ_TIMEOUT
from tests.uploader.test_retry import Flaky, hub_error
from uploader.errors import RateLimitedError, TransientError
from uploader.hub import HubClient, HubConfig, LocalFile
from uploader.pacing import (
    ARRIVAL_MARGIN_S,
    PACING_FILENAME,
    Operation,
    PaceLimit,
    Pacer,
    PacingInterrupted,
    pacer_from_limits,
)
from uploader.retry import RetryPolicy, call_with_retry

WINDOW_S = 3
LIMIT = 2
DEADLINE_S = 10.0


class FakeTime:
    """A wall clock and a stop event whose `wait` moves that clock instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.waits: list[float] = []
        self.stop_after: int | None = None  # set the "stop" during this many-th wait

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            return True
        self.now += seconds
        return False


def pacer(fake: FakeTime, path: Path | None = None, count: int = 3,
          window: float = 60.0, margin: float = 0.0) -> Pacer:
    return Pacer({Operation.COMMIT: PaceLimit(count, window)}, path, clock=fake, margin=margin)


# ---- the pacer ---------------------------------------------------------------------------


def test_a_full_window_waits_until_its_oldest_slot_leaves() -> None:
    fake = FakeTime()
    paced = pacer(fake)
    for _ in range(3):
        paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
        fake.now += 10
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    assert fake.waits == [30.0]  # the first slot (30 s ago) leaves the 60 s window
    paced.acquire(Operation.CREATE_REPO, fake)  # type: ignore[arg-type]  # not limited
    assert fake.waits == [30.0] and paced.waits == 1


def test_slots_are_kept_a_margin_longer_than_the_window() -> None:
    # The Hub counts a request when it arrives, a little after the slot was taken.
    fake = FakeTime()
    paced = pacer(fake, count=1, margin=ARRIVAL_MARGIN_S)
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    assert fake.waits == [60.0 + ARRIVAL_MARGIN_S]


def test_the_wait_is_logged_with_the_resume_time(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    paced = pacer(fake, count=1)
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="uploader.pacing"):
        paced.acquire(Operation.COMMIT, fake, "commit 9 files to alice/x")  # type: ignore[arg-type]
    (record,) = caplog.records
    assert "resuming at" in record.getMessage() and record.resume_at in record.getMessage()
    assert (record.operation, record.wait_s, record.what) == ("commit", 60.0,
                                                               "commit 9 files to alice/x")


def test_stop_interrupts_the_wait_and_takes_no_slot() -> None:
    fake = FakeTime()
    paced = pacer(fake, count=1)
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    fake.stop_after = 1
    with pytest.raises(PacingInterrupted):
        paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    assert isinstance(PacingInterrupted("x"), TransientError)
    fake.stop_after = None
    fake.now += 60
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]  # one free slot, not two
    assert fake.waits == [60.0]


def test_slots_survive_a_restart(tmp_path: Path) -> None:
    fake = FakeTime()
    path = tmp_path / PACING_FILENAME
    first = pacer(fake, path, count=2)
    for _ in range(2):
        first.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
        fake.now += 5
    fake.now += 5
    restarted = pacer(fake, path, count=2)
    restarted.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    assert fake.waits == [45.0], "a restart must not reset the allowance"
    assert len(json.loads(path.read_text())["slots"]["commit"]) == 2


def test_an_unreadable_log_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / PACING_FILENAME
    path.write_text("{not json")
    fake = FakeTime()
    with caplog.at_level(logging.WARNING, logger="uploader.pacing"):
        paced = pacer(fake, path, count=1)
    paced.acquire(Operation.COMMIT, fake)  # type: ignore[arg-type]
    assert fake.waits == [] and "unreadable" in caplog.text


def test_no_pacer_without_a_cap() -> None:
    assert pacer_from_limits(0, 0) is None
    paced = pacer_from_limits(128, 0)
    assert paced is not None and set(paced.limits) == {Operation.COMMIT}
    with pytest.raises(ValueError):
        PaceLimit(-1)


# ---- 429s in call_with_retry ---------------------------------------------------------------


def test_announced_waits_within_the_cap_do_not_use_up_attempts() -> None:
    policy = RetryPolicy(attempts=1, initial_wait=1.0, max_wait=30.0, jitter=0.0,
                         max_rate_limit_wait=60.0)
    limited = [hub_error(429, headers={"Retry-After": str(s)}) for s in (5, 30, 60)]
    waits: list[float] = []
    assert call_with_retry(policy, "commit", Flaky(*limited), sleep=waits.append) == "ok"
    assert waits == [5.0, 30.0, 60.0]


def test_a_wait_beyond_the_cap_ends_the_attempt_at_once() -> None:
    policy = RetryPolicy(attempts=2, initial_wait=1.0, max_wait=30.0, jitter=0.0,
                         max_rate_limit_wait=60.0)
    fn = Flaky(*[hub_error(429, headers={"Retry-After": "3600"}) for _ in range(3)])
    waits: list[float] = []
    with pytest.raises(RateLimitedError) as caught:
        call_with_retry(policy, "commit", fn, sleep=waits.append)
    # Surfaced without sleeping: the pipeline postpones the checkpoint for the announced hour.
    assert waits == [] and fn.calls == 1 and caught.value.wait_seconds == 3600


def test_the_rate_limit_log_names_the_resume_time(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy(attempts=1, max_rate_limit_wait=3600.0)
    fn = Flaky(hub_error(429, headers={"RateLimit": '"api";r=0;t=2580'}))
    with caplog.at_level(logging.WARNING, logger="uploader.retry"):
        call_with_retry(policy, "commit 9 files to alice/x", fn, sleep=lambda s: None)
    (record,) = caplog.records
    message = record.getMessage()
    assert "waiting 2580s, resuming at " in message and record.resume_at in message
    assert (record.wait_s, record.announced_s, record.counts_as_attempt) == (2580.0, 2580.0,
                                                                             False)


# ---- HubClient against devhub in rate-limit mode --------------------------------------------


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[DevHub]:
    spec = f"commits={LIMIT}/{WINDOW_S},repos={LIMIT}/{WINDOW_S}"
    with DevHub(tmp_path / "hub", users={ALICE: ALICE_TOKEN}, rate_limit=spec) as hub:
        yield hub


def client(hub: DevHub, policy: RetryPolicy, *, pacer: Pacer | None = None,
           stop: threading.Event | None = None) -> HubClient:
    config = HubConfig(endpoint=hub.url, token_provider=lambda: ALICE_TOKEN,
                       connect_timeout=TEST_CONNECT_TIMEOUT, read_timeout=TEST_READ_TIMEOUT)
    return HubClient(config, policy, stop, pacer=pacer)


def one_file(n: int) -> list[LocalFile]:
    data = f"checkpoint {n}\n".encode()
    return [LocalFile("notes.txt", digest_bytes(data), data=data)]


def statuses(hub: DevHub, path_part: str) -> list[int]:
    return [e["status"] for e in hub.log() if path_part in e["path"] and e["method"] == "POST"]


def test_hub_client_waits_out_429s_without_using_attempts(limited: DevHub) -> None:
    hub = client(limited, RetryPolicy(attempts=1, max_rate_limit_wait=WINDOW_S * 2))
    repos = [f"{ALICE}/r{n}-{time.monotonic_ns()}" for n in range(LIMIT + 1)]
    for repo_id in repos:  # one burst per kind: each window fills up on its own
        hub.ensure_repo(repo_id)
    for n, repo_id in enumerate(repos):
        hub.commit(repo_id, one_file(n), f"step {n}")
    assert statuses(limited, "/api/repos/create") == [200, 200, 429, 200]
    assert statuses(limited, "/commit/") == [200, 200, 429, 200]
    assert hub.rate_limits == 2


def test_a_pacer_keeps_the_client_under_the_limit(limited: DevHub, tmp_path: Path) -> None:
    paced = Pacer({op: PaceLimit(LIMIT, WINDOW_S) for op in Operation}, tmp_path / "p.json")
    hub = client(limited, RetryPolicy(attempts=1, max_rate_limit_wait=0), pacer=paced)
    for n in range(LIMIT + 1):
        repo_id = f"{ALICE}/p{n}-{time.monotonic_ns()}"
        hub.ensure_repo(repo_id)
        hub.commit(repo_id, one_file(n), f"step {n}")
    assert 429 not in statuses(limited, "/api/repos/create") + statuses(limited, "/commit/")
    assert paced.waits >= 1 and hub.rate_limits == 0


def test_stop_interrupts_a_pacing_wait_promptly(limited: DevHub) -> None:
    stop = threading.Event()
    paced = Pacer({Operation.CREATE_REPO: PaceLimit(1, 3600.0)})
    hub = client(limited, RetryPolicy(attempts=3), pacer=paced, stop=stop)
    hub.ensure_repo(f"{ALICE}/first-{time.monotonic_ns()}")
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(PacingInterrupted):
        hub.ensure_repo(f"{ALICE}/second-{time.monotonic_ns()}")
    timer.join()
    assert time.monotonic() - started < DEADLINE_S
    assert statuses(limited, "/api/repos/create") == [200], "nothing sent while paced"
