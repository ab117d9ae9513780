"""What the CLI shows and reads, as real `python -m uploader` processes: `status` on a failed
row (its attempts and when it is tried next), `--version` with JSON logs asked for (still one
line of text), and list settings written as JSON (`UPLOADER_DENYLIST='["*.pt", "*.bin"]'`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from shared.run_info import start_run
from tests.e2e.conftest import TOKEN, expected_repo, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import run_uploader, uploader_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ROUND_BACKOFF = 3600  # the next round is an hour away: a time that cannot be "now"


def status_rows(out: Path, env: dict[str, str]) -> list[dict]:
    done = run_uploader(["status", "--json", "--output-dir", str(out)], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_shows_a_failed_rows_attempts_and_its_next_try(hub, tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id)
    hub.add_faults({"action": "status", "status": 503, "path": "/commit/"})  # an outage
    # TZ fixed so the test reads the local time status prints. A pipe, with COLUMNS narrow:
    # a table that is not on a terminal is never cut.
    env = uploader_env(hub.url, TOKEN, TZ="UTC", COLUMNS="80", WANDB_MODE="disabled")
    backfill = ["backfill", "--output-dir", str(out), "--retry-attempts", "1",
                "--round-backoff", str(ROUND_BACKOFF), "--round-backoff-max",
                str(4 * ROUND_BACKOFF)]
    for attempts in (1, 2):  # a second round: attempts and next try both move on
        started = time.time()
        done = run_uploader(backfill, env)
        assert done.returncode == 1, done.stderr[-3000:]
        (row,) = status_rows(out, env)
        assert (row["state"], row["attempts"]) == ("failed", attempts), row
        wait = ROUND_BACKOFF * 2 ** (attempts - 1)
        assert started + wait <= row["next_attempt_at"] <= time.time() + wait, row

        table = run_uploader(["status", "--output-dir", str(out)], env)
        assert table.returncode == 0, table.stderr
        header, line = table.stdout.splitlines()[:2]
        assert header.split()[:7] == ["step", "kind", "state", "size", "eval_loss", "tries",
                                      "repo"], header
        fields = line.split()
        assert fields[:3] == ["50", "checkpoint", "failed"], line
        tries = header.index("tries")
        assert line[tries:tries + len("tries")].strip() == str(attempts), (header, line)
        next_try = time.strftime("%H:%M:%S", time.gmtime(row["next_attempt_at"]))
        assert f"next try {next_try}" in line, line
        assert line.endswith(f"({row['last_error']})"), line  # then its whole last error
        assert table.stdout.splitlines()[-1].startswith(
            "0 verified, 0 committed, 0 pending, 1 failed"), table.stdout


@pytest.mark.parametrize("how", [
    [],  # UPLOADER_LOG_FORMAT=json in the environment
    ["dotenv"],  # ... in ./.env
    ["--log-format", "json"],  # ... and on the command line
], ids=["environment", "dotenv", "flag"])
def test_version_stays_one_line_of_text_with_json_logs(how: list[str], tmp_path: Path) -> None:
    env = uploader_env("http://127.0.0.1:9", None)
    args = ["--version"]
    if how == ["dotenv"]:
        (tmp_path / ".env").write_text("UPLOADER_LOG_FORMAT=json\n")
    else:
        env["UPLOADER_LOG_FORMAT"] = "json"
        args += how
    def uploader(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "uploader", *argv], cwd=tmp_path,
                              env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=60)

    done = uploader(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ckpt-uploader {version('checkpoint-sidecar')}\n", done.stdout
    assert done.stderr == ""
    # JSON logs were asked for, for real: the same mistake there prints one JSON object.
    wrong = uploader(*[a.replace("--version", "--no-such-flag") for a in args])
    assert wrong.returncode == 2 and json.loads(wrong.stderr)["severity"] == "ERROR", wrong.stderr


@pytest.mark.parametrize("how", ["environment", "flag"])
def test_list_settings_take_json(hub, api, tmp_path: Path, how: str) -> None:
    out = tmp_path / "out"
    write_checkpoint(out, 50)
    denylist = '["*.pt", "*.bin"]'
    env = uploader_env(hub.url, TOKEN, WANDB_MODE="disabled")
    args = ["backfill", "--output-dir", str(out)]
    if how == "environment":
        env["UPLOADER_DENYLIST"] = denylist
    else:
        args += ["--denylist", denylist]
    done = run_uploader(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    (repo,) = repos(api)
    assert repo == expected_repo(out, "checkpoint-50")
    files = set(api.list_repo_files(repo))
    assert not {f for f in files if f.endswith((".pt", ".bin"))}, files
    # Only the patterns were applied: the rest of the checkpoint is there.
    assert {"adapter_model.safetensors", "rng_state.pth", "trainer_state.json"} <= files, files
    for skipped in ("optimizer.pt", "scheduler.pt", "training_args.bin"):
        assert re.search(rf"file not uploaded .*file={re.escape(skipped)}", done.stderr), skipped
