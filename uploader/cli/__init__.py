"""`ckpt-uploader` / `python -m uploader`: one module per verb, options written once.

Every field of `UploaderSettings` becomes a flag on the subcommands that read it, generated from
the model, so a flag, its `UPLOADER_*` variable and the README's table can never disagree. Known
errors print as one line (`error: ...; fix`) and exit 2; nothing the user can fix prints a
traceback. Heavy libraries are imported by the verbs, not here: `--help` and `status` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

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
    """argparse prints usage plus a message over several lines; we print one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"error: {message}; see `{self.prog} --help`\n")


def _add_field(parser: argparse.ArgumentParser, name: str) -> None:
    field = UploaderSettings.model_fields[name]
    help_text = f"{field.description} [env {env_name(name)}; default {field.default!r}]"
    flag = flag_of(name)
    if field.annotation is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                            help=help_text)
    elif name == "denylist":
        parser.add_argument(flag, dest=name, action="append", default=None, metavar="PATTERN",
                            help=help_text)
    else:
        parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ckpt-uploader", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                  parser_class=OneLineParser)
    for verb, summary in VERBS.items():
        sub = verbs.add_parser(verb, help=summary, description=summary)
        for name in UploaderSettings.model_fields:
            if verb in commands_of(name):
                _add_field(sub, name)
    return parser


def settings_from(args: argparse.Namespace) -> UploaderSettings:
    values: dict[str, Any] = {k: v for k, v in vars(args).items()
                              if k in UploaderSettings.model_fields and v is not None}
    try:
        return UploaderSettings(**values)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


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
        retry_max_wait=settings.retry_max_wait, environ=os.environ))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        configure_xet(settings)
        module = importlib.import_module(f"uploader.cli.{args.command}")
        return int(module.run(settings))
    except LockHeldError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONFIG
    except UploaderError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
