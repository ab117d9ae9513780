"""The CI-sized fault campaign: bench/chaos.py with a fixed seed, fewer kills, a shorter run."""

from __future__ import annotations

import pytest

from bench.chaos import run_campaign

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
CI_SEED = 7


def test_fixed_seed_campaign_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    report = run_campaign(CI_SEED, kills=6, max_steps=200, work=tmp_path)
    print(report.table())
    assert report.expected == 10  # 4 checkpoints + final, in each of the two phases
    assert report.duplicates == 0
    assert report.lost == 0
    assert report.premature == 0
    assert report.trainer_errors == 0
    assert report.identical == report.expected
    assert report.restarts == 6 and report.devhub_restarts == 2
    assert sum(report.faults.values()) > 0
    assert report.transfer == "xet" and report.upload_requests > 0  # the production path
    integrity = report.integrity  # phase 3: staging failure and an in-place rewrite
    assert integrity is not None and integrity.rewrites == 1
    assert integrity.lost == 0 and integrity.damaged_verified == 0
    assert integrity.identical == integrity.folders > 0 and integrity.uploader_exit == 0
