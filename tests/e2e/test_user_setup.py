"""A new user's own setup, driven as they would drive it: a plain Trainer output dir, a saved
`hf auth login`, a `.env` file, list settings as typed in a shell, `--log-format json` with a
flaky Hub, and `--help`. Every uploader here is a real `python -m uploader` process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub
from tests.e2e.conftest import TOKEN, USER
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import uploader_env

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 120
# write_checkpoint's trainer_state.json says max_steps 450: the last of these ends the run.
PLAIN_STEPS = (400, 450)


def uploader(args: list[str], env: dict[str, str], cwd: Path | None = None,
             timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader", *args], env=env, cwd=cwd,
                          text=True, capture_output=True, timeout=timeout)


def user_env(hub: DevHub, tmp_path: Path, token: str | None = TOKEN, **extra: str
             ) -> dict[str, str]:
    """The uploader's test environment with the user's own HF_HOME (no saved login yet)."""
    env = uploader_env(hub.url, token, HF_HOME=str(tmp_path / "hf-home"), **extra)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def repo_files(repo_id: str, hub: DevHub) -> set[str]:
    return set(HfApi(endpoint=hub.url, token=TOKEN).list_repo_files(repo_id))


def plain_trainer_dir(out: Path) -> None:
    for step in PLAIN_STEPS:
        write_checkpoint(out, step, run_id=None, marker=False)


# -- 1. any trainer ------------------------------------------------------------------------------


def test_plain_trainer_dir_gets_watch_exit_status_best_and_cleanup(hub: DevHub,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    plain_trainer_dir(out)
    env = user_env(hub, tmp_path)
    watched = uploader(["watch", "--output-dir", str(out), "--exit-when-done"], env)
    assert watched.returncode == 0, watched.stderr[-3000:]
    assert "global_step 450 == max_steps" in watched.stderr

    status = uploader(["status", "--output-dir", str(out), "--metric", "eval_loss"], env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert "eval_loss" in lines[0]
    assert re.fullmatch(r"2 verified, 0 committed, 0 pending, 0 failed; .* on the Hub", lines[-1]), lines[-1]

    best = uploader(["best", "--output-dir", str(out), "--json"], env)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["step"] == 450  # eval_loss 3 - step/500: the last is lowest

    plan = uploader(["cleanup", "--output-dir", str(out), "--keep-best", "1",
                     "--keep-latest", "1", "--dry-run"], env)
    assert plan.returncode == 0, plan.stderr
    doomed = [line.split()[1] for line in plan.stdout.splitlines()
              if line.strip().startswith("delete")]
    assert len(doomed) == 1 and "-checkpoint-400-" in doomed[0]
    done = uploader(["cleanup", "--output-dir", str(out), "--keep-best", "1",
                     "--keep-latest", "1", "--yes"], env)
    assert done.returncode == 0, done.stderr
    left = {r.id for r in HfApi(endpoint=hub.url, token=TOKEN).list_models(author=USER)}
    assert doomed[0] not in left and any("-checkpoint-450-" in r for r in left)


# -- 2. the user's existing settings -------------------------------------------------------------


def test_saved_hf_auth_login_is_the_token(hub: DevHub, tmp_path: Path) -> None:
    env = user_env(hub, tmp_path, token=None)
    hf = Path(sys.executable).with_name("hf")
    login = subprocess.run([str(hf), "auth", "login", "--token", TOKEN], env=env, text=True,
                           capture_output=True, timeout=RUN_TIMEOUT)
    assert login.returncode == 0, login.stderr
    assert (tmp_path / "hf-home" / "token").read_text().strip() == TOKEN
    out = tmp_path / "out"
    write_checkpoint(out, 50)
    done = uploader(["backfill", "--output-dir", str(out)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TOKEN not in done.stdout + done.stderr


def test_token_order_is_hf_token_then_the_file_then_the_saved_login(hub: DevHub,
                                                                    tmp_path: Path) -> None:
    wrong = "hf_" + "w" * 30
    good_file, wrong_file = tmp_path / "good-token", tmp_path / "wrong-token"
    good_file.write_text(TOKEN + "\n")
    wrong_file.write_text(wrong + "\n")
    (tmp_path / "hf-home").mkdir()
    (tmp_path / "hf-home" / "token").write_text(wrong)  # a stale `hf auth login`
    empty = tmp_path / "empty-out"
    empty.mkdir()

    def backfill(**env: str) -> subprocess.CompletedProcess[str]:
        return uploader(["backfill", "--output-dir", str(empty)],
                        user_env(hub, tmp_path, token=None, **env))

    first = backfill(HF_TOKEN=TOKEN, HF_TOKEN_FILE=str(wrong_file))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "HF_TOKEN and HF_TOKEN_FILE are both set: HF_TOKEN is used" in first.stderr
    second = backfill(HF_TOKEN_FILE=str(good_file))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "both set" not in second.stderr
    third = backfill(HF_TOKEN_FILE=str(wrong_file))
    assert third.returncode == 2 and "HF_TOKEN" in third.stderr, third.stderr[-2000:]
    for done in (first, second, third):
        assert TOKEN not in done.stdout + done.stderr and wrong not in done.stderr


def test_no_token_anywhere_names_every_source(hub: DevHub, tmp_path: Path) -> None:
    done = uploader(["backfill", "--output-dir", str(tmp_path)], user_env(hub, tmp_path, None))
    assert done.returncode == 2
    assert "hf auth login" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_dotenv_holds_token_endpoint_lists_and_wandb_dir(hub: DevHub, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    write_checkpoint(out, 50)
    (work / ".env").write_text(
        f"HF_TOKEN={TOKEN}\n"
        f"HF_ENDPOINT={hub.url}\n"
        "UPLOADER_OUTPUT_DIR=out\n"
        "UPLOADER_DENYLIST='*.pt,*.pth'  # the optimizer and RNG states stay local\n"
        "WANDB_MODE=offline\n"
        f"WANDB_DIR={tmp_path / 'wandb-home'}\n")
    env = {k: v for k, v in user_env(hub, tmp_path, token=None).items()
           if k not in ("HF_ENDPOINT", "WANDB_MODE")}
    done = uploader(["backfill"], env, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    (repo,) = [r.id for r in HfApi(endpoint=hub.url, token=TOKEN).list_models(author=USER)]
    files = repo_files(repo, hub)
    assert "adapter_model.safetensors" in files
    assert not {f for f in files if f.endswith((".pt", ".pth"))}, files
    runs = list((tmp_path / "wandb-home" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "the W&B run belongs under WANDB_DIR"
    assert not (out / ".uploader" / "wandb").exists()


@pytest.mark.parametrize(("name", "value"), [("UPLOADER_DENYLIST", "[oops"),
                                             ("UPLOADER_CONCURRENCY", "two"),
                                             ("UPLOADER_LOG_FORMAT", "xml")])
def test_every_settings_error_is_one_line_naming_the_setting(
        hub: DevHub, tmp_path: Path, name: str, value: str) -> None:
    done = uploader(["backfill", "--output-dir", str(tmp_path)],
                    user_env(hub, tmp_path, **{name: value}))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in done.stderr, lines


# -- 4. logs users can read ----------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_once_and_scrubbed(hub: DevHub,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_checkpoint(out, 50)
    # One 503 on the LFS upload: huggingface_hub's http_backoff warns and retries by itself.
    hub.add_faults({"method": "PUT", "path": "^/_lfs/", "action": "status", "status": 503,
                    "times": 1})
    done = uploader(["backfill", "--output-dir", str(out), "--transfer", "lfs",
                     "--log-format", "json"], user_env(hub, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    records = []
    for line in (done.stdout + done.stderr).splitlines():
        record = json.loads(line)  # every line is one JSON object
        assert {"timestamp", "severity", "message"} <= set(record)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["timestamp"])
        records.append(record)
    backoff = [r for r in records if "thrown while requesting PUT" in r["message"]]
    assert len(backoff) == 1, "the library's warning must print once, through our handler"
    assert backoff[0]["logger"].startswith("huggingface_hub")
    assert any(r["message"] == "checkpoint on the Hub" for r in records)
    assert TOKEN not in done.stdout + done.stderr


def test_help_reads_as_users_type(hub: DevHub, tmp_path: Path) -> None:
    env = user_env(hub, tmp_path)
    text = uploader(["watch", "--help"], env).stdout
    assert "default: ./llama3-medical-ner-lora" in text and "default: text" in text
    assert "{text,json}" in text and "{auto,xet,lfs}" in text
    for group in ("Hub connection:", "retries and pacing:", "pruning:"):
        assert group in text
    assert "examples:" in text and "WANDB_DIR" in text
    cleanup = uploader(["cleanup", "--help"], env).stdout
    assert "--yes" in cleanup and "--no-yes" not in cleanup and "--no-dry-run" not in cleanup
    version = uploader(["--version"], env)
    assert version.returncode == 0 and re.fullmatch(r"ckpt-uploader \S+\n", version.stdout)


def test_process_environment_wins_over_dotenv(hub: DevHub, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("UPLOADER_LOG_FORMAT=json\n")
    env = user_env(hub, tmp_path, UPLOADER_LOG_FORMAT="text") | {"HF_TOKEN": "hf_" + "x" * 30}
    done = uploader(["backfill", "--output-dir", str(tmp_path / "missing")], env, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert os.environ.get("UPLOADER_LOG_FORMAT") is None  # nothing leaked into the test
