"""`ckpt-uploader` / `python -m uploader`: one module per verb, options written once.

Every field of `UploaderSettings` becomes a flag on the subcommands that read it, generated from
the model, so a flag, its `UPLOADER_*` variable and the README's table can never disagree. `.env`
is applied to the environment first (`shared.env.apply_dotenv`, as the trainer does). Known
errors print as one line (`error: ...; fix`) and exit 2; nothing the user can fix prints a
traceback. With `--log-format json` (or `UPLOADER_LOG_FORMAT=json`, also from `.env`) that line
is one JSON object, usage errors included. Heavy libraries are imported by the verbs, not
here: `--help` and `status` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError

from shared.env import apply_dotenv
from uploader.cli import help as helptext
from uploader.errors import ConfigError, LockHeldError, UploaderError
from uploader.settings import UploaderSettings, commands_of, env_name, flag_of

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

VERBS: dict[str, str] = {
    "watch": "the sidecar: scan, then upload every completed checkpoint until stopped",
    "backfill": "one pass: upload everything complete that is not verified, then exit",
    "status": "one row per checkpoint: state, repo, URL, size, eval_loss, attempts, error",
    "verify": "re-check every verified checkpoint on the Hub; a damaged copy is uploaded again",
    "best": "the best verified checkpoint by --metric (from the state, or the Hub's manifests)",
    "cleanup": "delete this run's other checkpoint repos (never finals, never other runs)",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus a message over several lines; we print one line, or one JSON
    object when JSON logs were asked for (`json_errors`: `main` reads that from the command
    line and the environment, as a usage error can come before `--log-format` is parsed).
    `--help` and `--version` stay text: they are not log lines."""

    def __init__(self, *args: Any, json_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_errors = json_errors

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it did not understand: a token pasted as a flag stays hidden.
        from uploader.logs import scrub

        print_error(f"{scrub(message)}; see `{self.prog} --help`", self.json_errors)
        self.exit(EXIT_CONFIG)


def _help_of(name: str) -> str:
    field = UploaderSettings.model_fields[name]
    default = helptext.plain_default(field.get_default(call_default_factory=True))
    shown = f"default: {default}; " if default is not None else ""
    # argparse expands %-formats in help strings.
    return f"{field.description} ({shown}env {env_name(name)})".replace("%", "%%")


def _add_field(parser: argparse._ActionsContainer, name: str) -> None:
    field = UploaderSettings.model_fields[name]
    flag, help_text = flag_of(name), _help_of(name)
    if field.annotation is bool:
        action: Any = "store_true" if helptext.is_switch(name) else argparse.BooleanOptionalAction
        parser.add_argument(flag, dest=name, action=action, default=None, help=help_text)
    elif name == "denylist":
        parser.add_argument(flag, dest=name, action="append", default=None, metavar="PATTERN",
                            help=help_text + "; repeat it or write a,b")
    else:
        # Choices shown, not enforced here: the settings model checks them (flag or env alike)
        # and names the setting in its one-line error.
        choices = helptext.choices_of(name)
        parser.add_argument(flag, dest=name, default=None,
                            type=str.upper if name == "log_level" else None,
                            metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
                            help=help_text)


def _add_fields(parser: argparse.ArgumentParser, verb: str) -> None:
    names = [n for n in UploaderSettings.model_fields if verb in commands_of(n)]
    groups: dict[str, argparse._ArgumentGroup] = {}
    for title, _ in (*helptext.GROUPS, ("other", ())):
        if any(helptext.GROUP_OF.get(n, "other") == title for n in names):
            groups[title] = parser.add_argument_group(title)
    for name in names:
        _add_field(groups[helptext.GROUP_OF.get(name, "other")], name)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("checkpoint-sidecar")
    except PackageNotFoundError:
        return "unknown"


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    """The parser; `json_errors`: usage errors print as one JSON object (see OneLineParser)."""
    parser = OneLineParser(prog="ckpt-uploader", description=__doc__.splitlines()[0],
                           epilog=helptext.ENVIRONMENT,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           json_errors=json_errors)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    verbs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                  parser_class=OneLineParser)
    for verb, summary in VERBS.items():
        sub = verbs.add_parser(verb, help=summary, description=summary,
                               epilog=helptext.epilog(verb),
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               json_errors=json_errors)
        _add_fields(sub, verb)
    return parser


def settings_from(args: argparse.Namespace) -> UploaderSettings:
    values: dict[str, Any] = {k: v for k, v in vars(args).items()
                              if k in UploaderSettings.model_fields and v is not None}
    try:
        return UploaderSettings(**values)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise ConfigError(str(exc).splitlines()[0]) from None


# Values read through a shared name (HF_ENDPOINT, ...) are reported under that name.
_FIELD_OF_ENV = {env_name(f): f for f in UploaderSettings.model_fields}


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        name = _FIELD_OF_ENV.get(str(loc[0]), str(loc[0])) if loc else ""
        if name in UploaderSettings.model_fields:
            parts.append(f"invalid {flag_of(name)} / {env_name(name)}: {message}")
        else:
            parts.append(message)
    return "; ".join(parts)


def configure_xet(settings: UploaderSettings) -> None:
    """hf_xet reads `HF_XET_*` when its session starts: derive them from our settings first."""
    from uploader.transfer import xet_environment

    os.environ.update(xet_environment(
        state_dir=settings.resolved_state_dir, connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout, retry_attempts=settings.retry_attempts,
        retry_max_wait=settings.retry_max_wait, concurrency=settings.concurrency,
        environ=os.environ))


def _json_wanted(args: argparse.Namespace) -> bool:
    chosen = getattr(args, "log_format", None) or os.environ.get(env_name("log_format"), "")
    return str(chosen).strip().lower() == "json"


_LOG_FORMAT_FLAG = flag_of("log_format")
# The shortest abbreviation argparse takes for it (`--log-` is also `--log-level`'s).
_LOG_FORMAT_PREFIX = "--log-f"


def json_wanted_before_parsing(argv: Sequence[str]) -> bool:
    """What `_json_wanted` will say, read before argparse runs (it may stop at a usage error
    first): the last `--log-format json` / `--log-format=json` (or an abbreviation argparse
    accepts) on the command line, else `UPLOADER_LOG_FORMAT` (with `.env` applied)."""
    chosen: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if len(name) >= len(_LOG_FORMAT_PREFIX) and _LOG_FORMAT_FLAG.startswith(name):
            if not eq:  # `--log-format` with no value says nothing (argparse refuses it)
                following = argv[i + 1] if i + 1 < len(argv) else "-"
                value = "" if following.startswith("-") else following
            chosen = value or chosen
    if chosen is None:
        chosen = os.environ.get(env_name("log_format"), "")
    return chosen.strip().lower() == "json"


def print_error(line: str, as_json: bool) -> None:
    """The one error line: `error: ...`, or with `--log-format json` one JSON object."""
    if as_json:
        from uploader.logs import iso_time

        now = time.time()
        line = json.dumps({"timestamp": iso_time(now), "severity": "ERROR", "time": now,
                           "level": "ERROR", "logger": "uploader.cli", "message": line})
    else:
        line = f"error: {line}"
    print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    apply_dotenv()  # before any setting or library reads the environment
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(json_errors=json_wanted_before_parsing(argv)).parse_args(argv)
    as_json = _json_wanted(args)
    try:
        settings = settings_from(args)
        configure_xet(settings)
        module = importlib.import_module(f"uploader.cli.{args.command}")
        return int(module.run(settings))
    except (LockHeldError, ConfigError) as exc:
        print_error(exc.one_line(), as_json)
        return EXIT_CONFIG
    except UploaderError as exc:
        print_error(exc.one_line(), as_json)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
