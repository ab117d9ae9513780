"""Usage errors (issue 18): one plain line, or with JSON logs asked for one JSON object.

`--log-format json` may come after the mistake, or the mistake may be at the top level where
no verb's flags are parsed yet: JSON is read from the command line and the environment (with
`.env` applied) before argparse runs. `--help` stays text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uploader.cli import EXIT_CONFIG, json_wanted_before_parsing, main, print_error

ENV = "UPLOADER_LOG_FORMAT"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # main() applies ./.env to os.environ: run where no .env is, and undo what it adds.
    monkeypatch.chdir(tmp_path)
    # setenv first: a bare delenv of an unset variable records nothing to undo, and the
    # `.env` test's UPLOADER_LOG_FORMAT=json then leaked into every later test of the worker.
    monkeypatch.setenv(ENV, "")
    monkeypatch.delenv(ENV)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    return err


def one_json_object(err: str) -> dict[str, object]:
    lines = err.splitlines()
    assert len(lines) == 1, err
    record = json.loads(lines[0])
    assert record["severity"] == record["level"] == "ERROR"
    assert record["logger"] == "uploader.cli"
    return record


def print_error_keys(capsys: pytest.CaptureFixture[str]) -> set[str]:
    print_error("x", as_json=True)
    return set(json.loads(capsys.readouterr().err))


@pytest.mark.parametrize(("argv", "message"), [
    (["watch", "--no-such-flag", "--log-format", "json"],
     "unrecognized arguments: --no-such-flag; see `ckpt-uploader --help`"),
    (["backfill", "--log-format=json", "--transfer"],
     "argument --transfer: expected one argument; see `ckpt-uploader backfill --help`"),
    (["--log-format=json", "watch"],  # before the verb: the top level knows no such flag
     "unrecognized arguments: --log-format=json; see `ckpt-uploader --help`"),
    (["status", "--log-f", "json", "--bogus"],  # argparse's abbreviation
     "unrecognized arguments: --bogus; see `ckpt-uploader --help`"),
], ids=["unknown-flag", "missing-value", "before-the-verb", "abbreviated"])
def test_usage_errors_are_one_json_object_with_json_on_the_command_line(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    record = one_json_object(usage_error(argv, capsys))
    assert record["message"] == message
    assert set(record) == print_error_keys(capsys)  # the shape of every other error line


@pytest.mark.parametrize(("argv", "message"), [
    (["nosuchverb"], "argument COMMAND: invalid choice: 'nosuchverb'"),
    ([], "the following arguments are required: COMMAND"),
], ids=["bad-choice", "missing-verb"])
def test_usage_errors_are_json_when_the_environment_asks(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "json")
    record = one_json_object(usage_error(argv, capsys))
    assert str(record["message"]).startswith(message), record


def test_usage_errors_are_json_when_dotenv_asks(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"{ENV}=json\n")
    record = one_json_object(usage_error(["watch", "--nope"], capsys))
    assert str(record["message"]).startswith("unrecognized arguments: --nope")


def test_usage_errors_are_one_plain_line_otherwise(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    err = usage_error(["watch", "--nope"], capsys)
    assert err == "error: unrecognized arguments: --nope; see `ckpt-uploader --help`\n"
    # The command line wins over the environment, as for every setting.
    monkeypatch.setenv(ENV, "json")
    err = usage_error(["watch", "--log-format", "text", "--nope"], capsys)
    assert err.startswith("error: unrecognized arguments: --nope") and len(err.splitlines()) == 1


def test_help_stays_text_with_json_logs(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "json")
    with pytest.raises(SystemExit) as exc:
        main(["watch", "--log-format", "json", "--help"])
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: ckpt-uploader watch") and err == ""


@pytest.mark.parametrize(("argv", "environ", "wanted"), [
    (["watch", "--log-format", "json"], {}, True),
    (["watch", "--log-format=JSON"], {}, True),
    (["watch", "--log-format", "json", "--log-format", "text"], {}, False),  # the last wins
    (["watch", "--log-format"], {ENV: "json"}, True),  # a flag without its value says nothing
    (["watch", "--log-format", "--nope"], {}, False),
    (["watch"], {ENV: " json "}, True),
    (["watch", "--", "--log-format", "json"], {}, False),
    (["watch", "--log-level", "json"], {}, False),
], ids=["flag", "flag=", "last-wins", "no-value", "no-value-flag", "env", "after --",
        "other-flag"])
def test_json_is_read_from_the_command_line_then_the_environment(
        argv: list[str], environ: dict[str, str], wanted: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert json_wanted_before_parsing(argv) is wanted
