"""`python -m devhub`: a local Hugging Face Hub for tests, benches and the demo.

The first stdout line is `devhub listening on http://HOST:PORT`; after it stdout stays quiet
(logs go to `<data-dir>/devhub.log`, requests to `<data-dir>/requests.jsonl` and the admin API).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from .app import DEFAULT_CHUNK_SIZE, App, AppConfig
from .auth import parse_org, parse_user
from .damage import apply_damage
from .ratelimit import RateLimiter, parse_rate_limit
from .server import serve
from .wire import HubError
from .xet_auth import DEFAULT_TOKEN_TTL_S

log = logging.getLogger("devhub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devhub", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:TOKEN[:read|write]",
        help="a user and its token (role write unless ':read'); repeatable",
    )
    parser.add_argument("--org", action="append", default=[], metavar="ORG:MEMBER[,MEMBER]")
    parser.add_argument(
        "--fullname",
        action="append",
        default=[],
        metavar="NAME=FULL NAME",
        help="full name whoami gives a user or org (default: its name); repeatable",
    )
    parser.add_argument("--admin-token", help="enables /_devhub/faults and /_devhub/log")
    parser.add_argument("--faults", type=Path, help="JSON list of fault rules (see devhub.faults)")
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults")
    parser.add_argument(
        "--rate-limit",
        metavar="KIND=N/SECONDS[,...]",
        help="per-user fixed windows answered with 429, e.g. commits=4/6,repos=10/60 "
        "(kinds: commits, repos; see devhub.ratelimit)",
    )
    parser.add_argument(
        "--multipart-chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="LFS objects larger than this go multipart, in parts of this size",
    )
    parser.add_argument(
        "--no-xet",
        action="store_true",
        help="serve LFS only: the Xet token endpoints answer 404, as on a Hub without Xet",
    )
    parser.add_argument(
        "--xet-token-ttl",
        type=int,
        default=DEFAULT_TOKEN_TTL_S,
        metavar="SECONDS",
        help="lifetime of the Xet access tokens devhub hands out",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _config(args: argparse.Namespace) -> AppConfig:
    return AppConfig(
        data_dir=args.data_dir,
        users=[parse_user(spec) for spec in args.user],
        orgs=[parse_org(spec) for spec in args.org],
        admin_token=args.admin_token,
        seed=args.seed,
        multipart_chunk_size=args.multipart_chunk_size,
        xet=not args.no_xet,
        xet_token_ttl=args.xet_token_ttl,
        fullnames=dict(_parse_fullname(spec) for spec in args.fullname),
    )


def _parse_fullname(spec: str) -> tuple[str, str]:
    name, sep, full = spec.partition("=")
    if not sep or not name or not full:
        raise ValueError(f"--fullname expects NAME=FULL NAME, got {spec!r}")
    return name, full


def _load_faults(app: App, path: Path) -> None:
    rules = app.faults.parse(json.loads(path.read_text()))
    for rule in rules:
        if rule.immediate:
            apply_damage(app.storage, app.xet, rule)
    app.faults.add(rules)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        limiter = RateLimiter(parse_rate_limit(args.rate_limit)) if args.rate_limit else None
    except ValueError as err:
        parser.error(str(err))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=config.data_dir / "devhub.log",
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s",
    )
    app = App(config)
    if args.faults:
        try:
            _load_faults(app, args.faults)
        except (OSError, ValueError, HubError) as err:
            print(f"Error: cannot load faults from {args.faults}: {err}", file=sys.stderr)
            return 2
    server = serve(app, args.host, args.port, limiter)
    host, port = server.server_address[:2]
    print(f"devhub listening on http://{host}:{port}", flush=True)
    log.info("listening on %s:%s, data in %s", host, port, config.data_dir)
    if limiter is not None:
        log.info("rate limits: %s", args.rate_limit)
    log.info("xet: %s", f"on, tokens live {config.xet_token_ttl}s" if config.xet else "off")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
