"""The sidecar at a fleet's limits: Hub rate limits (devhub's rate-limit mode), the SIGTERM
drain a Kubernetes native sidecar gets, the backfill that completes the rest, and the refusal
to run beside a non-zero rank."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub
from tests.e2e.conftest import OTHER, OTHER_TOKEN, READ_TOKEN, TOKEN, USER, expected_repo
from tests.e2e.test_uploader_core import check_exactly_once, watch, write_run
from tests.support.processes import run_uploader, uploader_env
from tests.support.waiting import wait_for
from uploader.errors import ConfigError
from uploader.service import check_rank
from uploader.state import State, StateStore

pytestmark = pytest.mark.e2e

# 10 commits (9 checkpoints + final) against 4 per window: at least two announced waits.
COMMITS_PER_WINDOW = 4
WINDOW_S = 8
RATE_LIMIT = f"commits={COMMITS_PER_WINDOW}/{WINDOW_S},repos={COMMITS_PER_WINDOW + 1}/{WINDOW_S}"
RUN_STEPS = tuple(range(50, 500, 50))
# A retry may not come back earlier than announced; this much later covers the request itself.
EARLY_S = 0.05
LATE_S = 3.0
GRACE_S = 5
COMMIT_DELAY_S = 2  # keeps the first upload in flight while SIGTERM arrives


@pytest.fixture
def limited_hub(tmp_path: Path) -> Iterator[DevHub]:
    with DevHub(tmp_path / "hub", users={USER: TOKEN, OTHER: OTHER_TOKEN},
                read_tokens={USER: READ_TOKEN}, rate_limit=RATE_LIMIT) as server:
        yield server


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # the upload block printed on stdout
    return lines


def records(output_dir: Path) -> list[Any]:
    store = StateStore.open(output_dir / ".uploader", readonly=True)
    try:
        return store.all()
    finally:
        store.close()


def commit_posts(hub: DevHub, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in hub.log()[since:] if e["method"] == "POST" and "/commit/" in e["path"]]


def repo_of(entry: dict[str, Any]) -> str:
    namespace, name = entry["path"].split("/")[3:5]  # /api/models/<ns>/<name>/commit/main
    return f"{namespace}/{name}"


def test_rate_limited_run_waits_as_told_and_verifies_everything(limited_hub, tmp_path):
    api = HfApi(endpoint=limited_hub.url, token=TOKEN)
    out = tmp_path / "out"
    sources = write_run(out, steps=RUN_STEPS)
    # One attempt per call: a 429 that used one up would fail the checkpoint at once.
    proc = watch(limited_hub, out, tmp_path, "--exit-when-done", UPLOADER_RETRY_ATTEMPTS="1",
                 UPLOADER_LOG_FORMAT="json", WANDB_MODE="disabled")
    assert proc.wait(180) == 0, proc.output()
    check_exactly_once(api, out, sources, tmp_path)

    rows = records(out)
    assert len(rows) == len(RUN_STEPS) + 1
    assert all(r.state is State.VERIFIED and r.attempts == 1 for r in rows), [
        (r.folder, r.state, r.attempts, r.last_error) for r in rows]
    logs = json_lines(proc.output())
    assert not [line for line in logs if line["message"] == "upload failed"]

    limited = [e for e in limited_hub.log() if e["status"] == 429]
    assert len([e for e in limited if "/commit/" in e["path"]]) >= 2, "the limit was not reached"
    waits = [line for line in logs if "rate-limited by the Hub" in line["message"]]
    assert len(waits) == len(limited), "one resume line per 429"
    for entry, line in zip(limited, waits, strict=True):
        assert line["resume_at"] in line["message"] and line["counts_as_attempt"] is False
        assert line["wait_s"] == line["announced_s"] and 1 <= line["wait_s"] <= WINDOW_S
        retry = next(e for e in limited_hub.log()
                     if e["time"] > entry["time"] and e["path"] == entry["path"])
        waited = retry["time"] - entry["time"]
        assert line["wait_s"] - EARLY_S <= waited <= line["wait_s"] + LATE_S, (waited, line)
        assert retry["status"] == 200, "waiting as long as told must find a fresh window"


def test_sigterm_drains_within_the_grace_and_backfill_uploads_exactly_the_rest(hub, api,
                                                                                tmp_path):
    out = tmp_path / "out"
    sources = write_run(out, steps=(50, 100, 150))
    first = expected_repo(out, "checkpoint-50")
    hub.add_faults({"action": "delay", "seconds": COMMIT_DELAY_S, "method": "POST",
                    "path": "/commit/", "times": 1})
    # W&B off: its close has a budget of its own (see deploy/k8s); this measures the drain.
    proc = watch(hub, out, tmp_path, "--drain-grace", str(GRACE_S), WANDB_MODE="disabled")
    wait_for(lambda: any(e["path"] == "/api/repos/create" and e["status"] == 200
                         for e in hub.log()), 60, "the first upload under way")
    started = time.monotonic()
    proc.terminate()
    assert proc.wait(GRACE_S * 4) == 0, proc.output()
    elapsed = time.monotonic() - started
    assert elapsed < GRACE_S, f"exited {elapsed:.1f} s after SIGTERM, grace {GRACE_S} s"
    assert "abandoned" not in proc.output()

    # The upload in flight was finished and verified; the rest is recorded, not lost.
    states = {r.repo_id: r.state for r in records(out)}
    assert states.pop(first) is State.VERIFIED
    assert states and set(states.values()) == {State.PENDING}, states
    rest = sorted(states)
    assert [repo_of(e) for e in commit_posts(hub)] == [first]

    before = len(hub.log())
    result = run_uploader(["backfill", "--output-dir", str(out)],
                          uploader_env(hub.url, TOKEN, WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stderr
    by_backfill = Counter(repo_of(e) for e in commit_posts(hub, before) if e["status"] == 200)
    assert by_backfill == Counter(rest), "backfill must upload exactly what was left"
    assert Counter(repo_of(e) for e in commit_posts(hub) if e["status"] == 200) == Counter(
        [first, *rest]), "no checkpoint may be committed twice"
    check_exactly_once(api, out, sources, tmp_path)


@pytest.mark.parametrize("environ,refused", [
    ({}, False), ({"RANK": "0"}, False), ({"NODE_RANK": "0", "RANK": " "}, False),
    ({"RANK": "3"}, True), ({"NODE_RANK": "1"}, True), ({"RANK": "zero"}, True),
])
def test_check_rank(environ: dict[str, str], refused: bool) -> None:
    if not refused:
        check_rank(environ)
        return
    with pytest.raises(ConfigError) as info:
        check_rank(environ)
    assert info.value.hint and "rank 0" in info.value.hint
    check_rank(environ, any_rank=True)  # the explicit override


def test_uploader_beside_a_non_zero_rank_refuses_with_one_line(hub, tmp_path):
    out = tmp_path / "out"
    write_run(out, steps=(50,))
    result = run_uploader(["watch", "--output-dir", str(out)],
                          uploader_env(hub.url, TOKEN, NODE_RANK="2"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NODE_RANK=2" in lines[0] and "rank 0" in lines[0], lines
    assert not (out / ".uploader").exists(), "refused before touching anything"
    assert not [e for e in hub.log() if e["path"] != "/_devhub/log"]


def test_sigterm_during_the_librarys_own_5xx_retries_ends_them(hub, tmp_path):
    # huggingface_hub retries a 503 on preupload 5 times (1+2+4+8+8 s of sleeps) inside one of
    # our calls; once SIGTERM arrived, the next retryable answer ends the attempt instead.
    out = tmp_path / "out"
    write_run(out, steps=(50,))
    hub.add_faults({"action": "status", "status": 503, "path": "/preupload/"})
    grace = 30
    proc = watch(hub, out, tmp_path, "--drain-grace", str(grace), WANDB_MODE="disabled")
    wait_for(lambda: any("/preupload/" in e["path"] and e["status"] == 503 for e in hub.log()),
             60, "the library retrying a 503")
    started = time.monotonic()
    proc.terminate()
    assert proc.wait(grace * 2) == 0, proc.output()
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"exited {elapsed:.1f} s after SIGTERM: the library kept retrying"
    assert "abandoned" not in proc.output()
    (record,) = [r for r in records(out) if r.folder == "checkpoint-50"]
    assert record.state in (State.PENDING, State.FAILED) and not record.permanent, record
