"""`python -m bench` (`make bench`): the three benchmarks in turn, each printing its table(s).

    python -m bench [--tiny] [--only training|upload|scale ...] [--work-dir DIR]

Each benchmark runs with its own defaults (the issue's sizes); run one module directly to change
its sizes or repeats (`python -m bench.scale --help`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from bench import scale, training_overhead, upload_throughput
from bench.common import machine

BENCHMARKS: dict[str, Callable[[list[str]], int]] = {
    "training": training_overhead.main,
    "upload": upload_throughput.main,
    "scale": scale.main,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke sizes")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS),
                        help="run only these (repeatable; default: all three)")
    parser.add_argument("--work-dir", help="where temporary folders go")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    common = (["--tiny"] if args.tiny else []) + (["--work-dir", args.work_dir]
                                                   if args.work_dir else [])
    print(f"machine: {machine()}", flush=True)
    failed = []
    for name in args.only or list(BENCHMARKS):
        started = time.monotonic()
        print(f"\n# bench {name}", flush=True)
        if BENCHMARKS[name](list(common)) != 0:
            failed.append(name)
        print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
