"""`python -m trainer` / `ckpt-trainer`: parse settings, read the token, run, map the exit code.

Exit codes: 0 completed; 1 failed (an `Error:` line, or a traceback for a bug); 2 invalid
settings, or options this machine cannot honour (before anything is downloaded); 3 stopped early
by --stop-after-step; 130 Ctrl-C; 143 SIGTERM. In every case but 2 the run info records the
outcome.
"""

from __future__ import annotations

import os
import sys

from shared.env import TokenError, apply_dotenv, read_token, redact_tokens
from trainer.logs import configure_logging
from trainer.settings import SettingsInputError, parse_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def _error(message: str, hint: str | None = None) -> None:
    # A settings error may quote what was typed: a token pasted as a flag stays hidden.
    print(f"Error: {redact_tokens(message)}", file=sys.stderr)
    if hint:
        print(f"Try: {hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    # `.env` means the same here as for the uploader: TRAINER_*, HF_*, WANDB_* not already set.
    apply_dotenv()
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
        token = read_token(os.environ)
    except (SettingsInputError, TokenError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    configure_logging()
    # Heavy imports (torch, transformers) only once the settings are known to be usable.
    from trainer.errors import UserError
    from trainer.preflight import PreflightError
    from trainer.train import Terminated, run

    try:
        result = run(settings, hub_token=token)
    except PreflightError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except UserError as exc:
        _error(str(exc), exc.hint)
        return EXIT_FAILED
    except Terminated:
        _error("terminated by SIGTERM; the run info records the run as failed",
               "--resume latest (or --resume hub) to continue")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if result.stopped_early:
        print(f"stopped at step {result.global_step} of {result.max_steps}; continue with "
              "--resume latest")
        return EXIT_STOPPED
    f1 = f"{result.f1.overall.f1:.4f}" if result.f1 else "n/a"
    print(f"run {result.run_id} completed at step {result.global_step}: final adapter in "
          f"{result.final_dir}, entity F1 {f1}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
