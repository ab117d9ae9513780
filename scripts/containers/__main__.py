"""`python -m scripts.containers [--keep]`: the whole container scenario, then a summary.

Exit 0 when every check held, 1 when one did not, 3 when no Docker engine can start here.
"""

from __future__ import annotations

import argparse
import sys

from scripts.containers.engine import EngineUnavailable
from scripts.containers.report import failures, summary
from scripts.containers.scenario import run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.containers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the run dir under /tmp")
    args = parser.parse_args(argv)
    try:
        report = run_all(keep=args.keep)
    except EngineUnavailable as err:
        print(f"SKIPPED: no Docker engine can start here: {err}")
        return 3
    print(summary(report))
    problems = failures(report)
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
