"""`python -m devhub.fidelity`: huggingface_hub's own suite against devhub, both transfer modes.

Exit status 0 when every failure is a known, out-of-scope one (`devhub.fidelity.selection`),
1 otherwise, 2 when the suite's source cannot be had.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .runner import MODES, format_table, run
from .selection import FAST, SELECTION
from .source import SuiteUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhub.fidelity", description=__doc__)
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--fast", action="store_true", help="the subset `make test` runs")
    parser.add_argument("--keep", type=Path, help="keep the scratch suite, logs and JUnit here")
    parser.add_argument("--failures", action="store_true", help="list every failed test")
    parser.add_argument("nodes", nargs="*", help="node ids relative to the suite's tests/")
    parser.add_argument("-k", dest="keyword", help="passed to pytest as -k")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    selection = args.nodes or (FAST if args.fast else SELECTION)
    modes = MODES if args.mode == "both" else (args.mode,)
    extra = ["-k", args.keyword] if args.keyword else []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    try:
        results = run(selection, modes, extra, keep=args.keep)
    except SuiteUnavailable as err:
        print(f"Error: huggingface_hub's test suite is unavailable: {err}", file=sys.stderr)
        return 2
    print(format_table(results))
    failed = [(r.mode, o) for r in results for o in r.failures]
    if args.failures or failed:
        for mode, outcome in failed:
            print(f"FAILED [{mode}] {outcome.nodeid}: {outcome.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
