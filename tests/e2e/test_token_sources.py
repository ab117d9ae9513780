"""Where the Hub token comes from (README, "Your existing settings" and the configuration
reference): `HF_TOKEN`, else `HF_TOKEN_FILE`, a secret file re-read before each round, so a
rotated secret takes effect without a restart; never from a flag, in either program.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.run_info import start_run
from tests.e2e.conftest import TOKEN, expected_repo, repos
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import UploaderProcess, uploader_env
from tests.support.waiting import wait_for
from trainer.settings import TrainerSettings
from uploader.cli import VERBS, build_parser
from uploader.errors import ConfigError
from uploader.settings import UploaderSettings, env_name, flag_of
from uploader.state import DB_FILENAME, Record, State, StateStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WRONG_TOKEN = "hf_RevokedTokenNobodyKnows0123456789"
# A name that could carry a credential; `tokens` (a count, as in --f1-max-new-tokens) is not one.
CREDENTIAL = re.compile(r"token(?!s)|secret|passw|credential|api[-_]?key", re.IGNORECASE)
FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")


def write_secret(path: Path, token: str) -> None:
    """As a secret store rotates a mounted file: the new content appears whole, at once."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)


def record_of(out: Path, folder: str) -> Record | None:
    if not (out / ".uploader" / DB_FILENAME).exists():
        return None
    try:
        store = StateStore.open(out / ".uploader", readonly=True)
    except ConfigError:  # created a moment ago, its schema not written yet
        return None
    try:
        return next((r for r in store.all() if r.folder == folder), None)
    finally:
        store.close()


def test_a_rotated_token_file_is_re_read_without_a_restart(hub, api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    secret = tmp_path / "secrets" / "hf_token"
    secret.parent.mkdir()
    write_secret(secret, TOKEN)
    # HF_TOKEN unset (it would win over the file): the file is the only source.
    env = uploader_env(hub.url, None, HF_TOKEN_FILE=str(secret), WANDB_MODE="disabled")
    assert "HF_TOKEN" not in env
    proc = UploaderProcess(["watch", "--output-dir", str(out)], env,
                           tmp_path / "watch.log").start()
    try:
        proc.wait_output("watching", 60)  # started with the valid token from the file
        write_secret(secret, WRONG_TOKEN)  # the secret is rotated to a token the Hub refuses
        folder = write_checkpoint(out, 50, run_id=info.run_id)

        def refused() -> bool:
            record = record_of(out, "checkpoint-50")
            return record is not None and record.error_class == "AuthError"

        wait_for(refused, 60, "an upload attempt refused with the rotated token")
        record = record_of(out, "checkpoint-50")
        assert record is not None and record.state is State.FAILED, record
        assert "401" in (record.last_error or ""), record.last_error
        assert repos(api) == []
        assert folder.is_dir() and (folder / "adapter_model.safetensors").is_file()

        write_secret(secret, TOKEN)  # rotated again, to a valid token
        wait_for(lambda: (r := record_of(out, "checkpoint-50")) is not None
                 and r.state is State.VERIFIED, 60,
                 "checkpoint-50 verified with the token read from the file again")
        assert proc.running(), "the token took effect without a restart"
        assert repos(api) == [expected_repo(out, "checkpoint-50")]
    finally:
        proc.stop()
    assert TOKEN not in proc.output() and WRONG_TOKEN not in proc.output()


# -- never from a flag -----------------------------------------------------------------------


def help_of(module: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "UPLOADER_",
                                                                   "TRAINER_"))}
    done = subprocess.run([sys.executable, "-m", module, *args, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def options_in(text: str) -> set[str]:
    return set(FLAG.findall(text))


def test_no_option_of_either_program_takes_a_token() -> None:
    uploader_help = {verb: help_of("uploader", *([verb] if verb else []))
                     for verb in ("", *VERBS)}
    trainer_help = help_of("trainer")
    shown = set().union(*(options_in(text) for text in uploader_help.values()),
                        options_in(trainer_help))
    assert {"--output-dir", "--hub-namespace", "--f1-max-new-tokens"} <= shown  # parsed right
    assert not {o for o in shown if CREDENTIAL.search(o)}, shown

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "watch" in a.choices)
    for sub in (parser, *subparsers.choices.values()):
        for action in sub._actions:
            names = [*action.option_strings, action.dest]
            assert not [n for n in names if CREDENTIAL.search(n)], (sub.prog, names)

    # The settings behind the flags and their variables: no field, alias or variable for it.
    uploader_names = {n for f in UploaderSettings.model_fields for n in (f, flag_of(f),
                                                                         env_name(f))}
    trainer_names = set(TrainerSettings.model_fields)
    for field in TrainerSettings.model_fields.values():
        alias = field.validation_alias
        trainer_names |= set(getattr(alias, "choices", [alias] if alias else []))
    assert not {n for n in uploader_names | trainer_names if CREDENTIAL.search(str(n))}

    # What both say instead: the variables, documented in their --help.
    assert "HF_TOKEN" in uploader_help[""] and "HF_TOKEN_FILE" in uploader_help[""]
    assert "HF_TOKEN" in trainer_help and "HF_TOKEN_FILE" in trainer_help


@pytest.mark.parametrize("flag", ["--token", "--hf-token"])
def test_a_token_given_as_a_flag_is_refused(flag: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "UPLOADER_",
                                                                   "TRAINER_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT)}
    for command in (["-m", "uploader", "backfill", "--output-dir", str(tmp_path)],
                    ["-m", "trainer"]):
        done = subprocess.run([sys.executable, *command, flag, WRONG_TOKEN], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr[-2000:])
        assert "unrecognized arguments" in done.stderr, done.stderr[-2000:]
        # The error names the flag, never the value typed after it.
        assert WRONG_TOKEN not in done.stdout + done.stderr, done.stderr[-2000:]
