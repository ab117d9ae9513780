"""The images built from the project's Dockerfiles and `docker-compose.yml` run on a real engine.

One run of `scripts.containers` (stand-in bases, `docker compose build`, `docker compose up
--build` with the tiny trainer on the CPU against devhub on the host, a kill, a crash, the
README's `run --rm` commands) backs every test here; each test asserts one claim of the
deployment story. Without an engine (no root, no dockerd) every test skips, saying why.
"""

from __future__ import annotations

from typing import Any

import pytest

from scripts.containers import report as checks
from scripts.containers.engine import EngineUnavailable
from scripts.containers.scenario import run_all

# The whole scenario runs in the first test's setup: about ten minutes, twenty at worst.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(2700)]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    try:
        result = run_all()
    except EngineUnavailable as err:
        pytest.skip(f"no Docker engine can start here: {err}")
    print(checks.summary(result))
    return result


def _holds(report: dict[str, Any], check: checks.Check) -> None:
    problem = check(report)
    assert problem is None, problem


def test_the_scenario_ran_to_its_end(report: dict[str, Any]) -> None:
    assert "error" not in report, report["error"]


def test_both_containers_are_wired_as_the_compose_file_says(report) -> None:
    _holds(report, checks.compose_wiring_is_the_files)


def test_every_checkpoint_and_the_final_adapter_are_verified_on_devhub(report) -> None:
    _holds(report, checks.every_checkpoint_verified_on_devhub)


def test_uploader_exits_0_when_done_and_is_not_restarted(report) -> None:
    _holds(report, checks.uploader_exits_0_when_done_and_stays_exited)


def test_healthcheck_turns_healthy_while_watching(report) -> None:
    _holds(report, checks.healthcheck_turns_healthy_while_watching)


def test_a_killed_uploader_restarted_loses_nothing(report) -> None:
    _holds(report, checks.kill_then_restart_loses_nothing)


def test_uploader_image_holds_no_torch(report) -> None:
    _holds(report, checks.uploader_image_has_no_torch)


def test_readme_run_commands_backfill_and_status(report) -> None:
    _holds(report, checks.readme_run_commands_work)


def test_secrets_appear_in_no_inspect_history_or_layer(report) -> None:
    _holds(report, checks.secrets_appear_nowhere)


def test_a_configuration_error_is_restarted_at_most_3_times(report) -> None:
    _holds(report, checks.configuration_error_stops_after_3_restarts)
