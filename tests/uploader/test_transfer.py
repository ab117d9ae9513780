"""Transfer selection (auto / xet / lfs) and the hf_xet settings derived from ours."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from uploader.errors import ConfigError
from uploader.settings import Transfer
from uploader.transfer import choose_transfer, xet_environment


@pytest.mark.parametrize(("setting", "environ", "use_xet", "falls_back"), [
    (Transfer.AUTO, {}, True, True),
    (Transfer.AUTO, {"HF_HUB_DISABLE_XET": "1"}, False, False),
    (Transfer.AUTO, {"HF_HUB_DISABLE_XET": "true"}, False, False),
    (Transfer.AUTO, {"HF_HUB_DISABLE_XET": "0"}, True, True),
    (Transfer.XET, {}, True, False),
    (Transfer.LFS, {}, False, False),
    (Transfer.LFS, {"HF_HUB_DISABLE_XET": "1"}, False, False),
])
def test_choice_follows_the_setting_and_the_ecosystem_switch(
        setting: Transfer, environ: dict[str, str], use_xet: bool, falls_back: bool) -> None:
    choice = choose_transfer(setting, environ)
    assert (choice.use_xet, choice.may_fall_back) == (use_xet, falls_back)


def test_forcing_xet_against_the_users_switch_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError) as caught:
        choose_transfer(Transfer.XET, {"HF_HUB_DISABLE_XET": "1"})
    assert "HF_HUB_DISABLE_XET" in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_without_hf_xet_auto_is_lfs_and_xet_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uploader.transfer.xet_installed", lambda: False)
    assert not choose_transfer(Transfer.AUTO, {}).use_xet
    with pytest.raises(ConfigError, match="hf_xet"):
        choose_transfer(Transfer.XET, {})


def _env(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return xet_environment(state_dir=tmp_path / "state", connect_timeout=5, read_timeout=10,
                           retry_attempts=3, retry_max_wait=0.5, environ=environ, concurrency=2)


def test_xet_cache_goes_under_the_state_dir_unless_the_user_chose(tmp_path: Path) -> None:
    assert _env({}, tmp_path)["HF_XET_CACHE"] == str(tmp_path / "state" / "xet")
    mine = _env({"HF_XET_CACHE": "/data/xet", "HF_XET_CLIENT_READ_TIMEOUT": "9s"}, tmp_path)
    assert "HF_XET_CACHE" not in mine and "HF_XET_CLIENT_READ_TIMEOUT" not in mine


def test_hf_xet_reads_the_values_we_derive(tmp_path: Path) -> None:
    # In a fresh process, as the uploader's own session would start.
    env = _env({"HF_HUB_DISABLE_TELEMETRY": "1"}, tmp_path)
    probe = ("import json, hf_xet; c = hf_xet.XetConfig(); keys = ['client.connect_timeout', "
             "'client.read_timeout', 'client.retry_max_attempts', 'client.retry_base_delay', "
             "'client.retry_max_duration', 'shard.cache_size_limit', 'log.dir_max_size', "
             "'telemetry.enabled', 'data.max_concurrent_file_ingestion']; print(json.dumps({k: str(c.get(k)) for k in keys}))")
    out = subprocess.run([sys.executable, "-c", probe], env=env | {"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True, timeout=60).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {
        "client.connect_timeout": str(timedelta(seconds=5)),
        "client.read_timeout": str(timedelta(seconds=10)),
        "client.retry_max_attempts": "3",
        "client.retry_base_delay": str(timedelta(seconds=0.5)),
        "client.retry_max_duration": str(timedelta(seconds=1.5)),
        "shard.cache_size_limit": str(256 * 1024 * 1024),
        "log.dir_max_size": str(16 * 1024 * 1024),
        "telemetry.enabled": "False",
        "data.max_concurrent_file_ingestion": "4",  # two files per upload thread, 2 threads
    }
