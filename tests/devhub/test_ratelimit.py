"""devhub's rate-limit mode (`--rate-limit`) and the `ratelimit` fault action."""

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import parse_ratelimit_headers

from devhub.ratelimit import FixedWindows, Kind, Quota, parse_rate_limit
from devhub.testing import DevHub, DevHubError

from .conftest import USERS, make_hub

WINDOW_S = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("commits=4/6,repos=10/60.5") == {
        Kind.COMMITS: Quota(4, 6.0), Kind.REPOS: Quota(10, 60.5)}
    for bad in ("commits=4", "commits=0/6", "pushes=1/1", "commits=1/1,commits=2/2", "", "x"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)


def test_fixed_window_admits_limit_then_names_the_time_left() -> None:
    clock = FakeClock()
    windows = FixedWindows(Quota(2, 10.0), clock)
    assert windows.admit("alice") is None
    clock.now += 4
    assert windows.admit("alice") is None
    clock.now += 2.5
    assert windows.admit("alice") == pytest.approx(3.5)  # the window opened 6.5 s ago
    assert windows.admit("bob") is None  # one window per user
    clock.now += 3.5
    assert windows.admit("alice") is None  # a fresh window: rejected calls did not count
    assert windows.reset_in("alice") == pytest.approx(10.0)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[DevHub]:
    with make_hub(tmp_path / "hub", rate_limit=f"commits=2/{WINDOW_S},repos=2/{WINDOW_S}") as hub:
        yield hub


def _rate_limited(call: Callable[[], object]) -> HfHubHTTPError:
    with pytest.raises(HfHubHTTPError) as err:
        call()
    assert err.value.response.status_code == 429
    return err.value


def _announced(err: HfHubHTTPError) -> int:
    headers = err.response.headers
    info = parse_ratelimit_headers(headers)
    assert info is not None and info.remaining == 0
    assert int(headers["Retry-After"]) == info.reset_in_seconds
    assert 1 <= info.reset_in_seconds <= WINDOW_S
    return info.reset_in_seconds


def test_repo_creations_are_limited_per_user(limited: DevHub) -> None:
    alice = HfApi(endpoint=limited.url, token=USERS["alice"])
    bob = HfApi(endpoint=limited.url, token=USERS["bob"])
    names = [f"alice/r{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    alice.create_repo(names[0])
    alice.create_repo(names[0], exist_ok=True)  # counts too, as on the Hub
    err = _rate_limited(lambda: alice.create_repo(names[1]))
    assert "repository creations (2 per 3 seconds)" in str(err)
    assert "Please retry in" in err.response.json()["error"]
    bob.create_repo(f"bob/r-{uuid.uuid4().hex[:6]}")  # another user, another window
    time.sleep(_announced(err))  # the behaviour under test: wait exactly as long as told
    alice.create_repo(names[1])
    assert not alice.repo_exists(names[2])


def test_commits_are_limited_and_other_calls_are_not(limited: DevHub) -> None:
    alice = HfApi(endpoint=limited.url, token=USERS["alice"])
    repo_id = f"alice/c-{uuid.uuid4().hex[:6]}"
    alice.create_repo(repo_id)

    def commit(n: int) -> None:
        alice.create_commit(repo_id, [CommitOperationAdd(f"f{n}.bin", bytes([n]) * 2048)],
                            commit_message=f"c{n}")

    commit(1)
    commit(2)
    err = _rate_limited(lambda: commit(3))
    assert "repository commits" in str(err)
    wait = _announced(err)
    alice.list_repo_files(repo_id)  # reads, preupload and LFS go on while commits wait
    log = [e for e in limited.log() if repo_id in e["path"]]
    assert [e["status"] for e in log if e["path"].endswith("/commit/main")] == [200, 200, 429]
    assert all(e["status"] == 200 for e in log if "/preupload/" in e["path"])
    time.sleep(wait)
    commit(3)
    assert {f"f{n}.bin" for n in (1, 2, 3)} <= set(alice.list_repo_files(repo_id))


def test_ratelimit_fault_rule_limits_what_it_matches(hub: DevHub, alice: HfApi,
                                                     repo_id: str) -> None:
    alice.create_repo(repo_id)
    hub.add_faults({"action": "ratelimit", "limit": 1, "window": 60, "path": "/commit/",
                    "user": "alice", "resource": "commits"})
    alice.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="one")
    err = _rate_limited(lambda: alice.create_commit(
        repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="two"))
    info = parse_ratelimit_headers(err.response.headers)
    assert info is not None and info.resource_type == "commits"
    assert 55 <= info.reset_in_seconds <= 60
    (rule,) = hub.faults()
    assert (rule["matches"], rule["hits"]) == (2, 1)


@pytest.mark.parametrize("rule", [{"action": "ratelimit", "limit": 1},
                                  {"action": "ratelimit", "limit": 1, "window": 5,
                                   "probability": 0.5}])
def test_invalid_ratelimit_rules_are_refused(hub: DevHub, rule: dict) -> None:
    with pytest.raises(DevHubError, match="400"):
        hub.add_faults(rule)


def test_bad_rate_limit_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devhub", "--data-dir", str(tmp_path), "--rate-limit", "commits=x"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--rate-limit expects" in result.stderr, result.stderr
