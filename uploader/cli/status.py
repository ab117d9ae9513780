"""`status`: one row per checkpoint, read from the state without taking the writer's lock.

`--json` prints only a JSON list; `--health` exits 0 when a watcher holds the state dir and its
loop ran within `--health-max-age` seconds (for container health checks), 1 otherwise. The table
names its metric column by `--metric`, shows when a failed row is tried next, fits the
terminal's width (long tails are cut) and ends with one summary line.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from typing import Any

from uploader.cli import EXIT_FAILED, EXIT_OK
from uploader.lock import lock_holder
from uploader.retention import best_record, current_run_id
from uploader.settings import UploaderSettings
from uploader.state import DB_FILENAME, HEARTBEAT_KEY, Record, StateStore
from uploader.units import human_bytes

COLUMNS = ("step", "kind", "state", "repo_id", "url", "size", "eval_loss", "attempts",
           "last_error")


def run(settings: UploaderSettings) -> int:
    state_dir = settings.resolved_state_dir
    if settings.health:
        return _health(settings)
    records: list[Record] = []
    if (state_dir / DB_FILENAME).exists():
        store = StateStore.open(state_dir, readonly=True)
        try:
            records = store.all(with_files=False)
        finally:
            store.close()
    # The same selection as `best`: this run's verified checkpoint with the lowest metric.
    best = best_record(records, settings.metric, run_id=current_run_id(settings.output_dir))
    rows = rows_of(records, best, settings.metric)
    if settings.json_output:
        print(json.dumps(rows, indent=2))
    else:
        # Cut to the terminal's width on a terminal only: piped or redirected, every line whole.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
        _table(rows, settings.metric, width)
    return EXIT_OK


def rows_of(records: list[Record], best: Record | None = None,
            metric: str = "eval_loss") -> list[dict[str, Any]]:
    return [{
        "step": r.step, "kind": str(r.kind), "state": str(r.state), "repo_id": r.repo_id,
        "url": r.url, "size": r.bytes, "eval_loss": r.eval_loss, "metric": metric,
        "metric_value": r.metrics.get(metric), "attempts": r.attempts,
        "last_error": r.last_error, "next_attempt_at": r.next_attempt_at,
        "best": best is not None and r.id == best.id,
        "folder": r.folder, "commit_sha": r.commit_sha, "completed_at": r.completed_at,
        "verified_at": r.verified_at,
    } for r in records]


LANDED = ("verified", "pruned")
MIN_WIDTH = 60  # below this (or 0: not a terminal) the table is not cut


def _table(rows: list[dict[str, Any]], metric: str, width: int) -> None:
    if not rows:
        print("no checkpoints recorded yet")
        return
    name = metric if len(metric) <= 12 else metric[:11] + "…"
    print(_fit(f"{'':2}{'step':>6}  {'kind':<10} {'state':<10} {'size':>9}  {name:>12}  "
               f"{'tries':>5}  repo / error", width))
    for row in rows:
        value = row["metric_value"]
        shown = f"{value:.4f}" if isinstance(value, int | float) else "-"
        tail = row["url"] or row["repo_id"]
        if row["state"] == "failed" and row["next_attempt_at"]:
            # Before the URL: a narrow terminal cuts the line's end, never this.
            tail = "next try " + time.strftime("%H:%M:%S", time.localtime(
                row["next_attempt_at"])) + "  " + tail
        if row["last_error"] and row["state"] not in LANDED:
            tail += f"  ({row['last_error']})"
        print(_fit(f"{'*' if row['best'] else ' ':2}{row['step']:>6}  {row['kind']:<10} "
                   f"{row['state']:<10} {human_bytes(row['size'] or 0):>9}  {shown:>12}  "
                   f"{row['attempts']:>5}  {tail}", width))
    if any(r["best"] for r in rows):
        print(f"* best by {metric}")
    print(summary(rows))


def summary(rows: list[dict[str, Any]]) -> str:
    """One line: how many are verified, committed (listed on the Hub, content check not yet
    passed: never pruned), pending and failed, and the bytes held on the Hub."""
    counts = Counter(r["state"] for r in rows)
    landed = sum(counts[s] for s in LANDED)
    failed, committed = counts["failed"], counts["committed"]
    pending = (len(rows) - landed - failed - committed - counts["deleted"]
               - counts["superseded"])
    held = sum(r["size"] or 0 for r in rows if r["state"] in LANDED)
    return (f"{landed} verified, {committed} committed, {pending} pending, {failed} failed; "
            f"{human_bytes(held)} on the Hub")


def _fit(line: str, width: int) -> str:
    if width < MIN_WIDTH or len(line) <= width:
        return line
    return line[: width - 1] + "…"


def _health(settings: UploaderSettings) -> int:
    state_dir = settings.resolved_state_dir
    pid = lock_holder(state_dir) if (state_dir / DB_FILENAME).exists() else None
    if pid is None:
        print("unhealthy: no watcher holds the state dir", file=sys.stderr)
        return EXIT_FAILED
    store = StateStore.open(state_dir, readonly=True)
    try:
        beat = store.meta_get(HEARTBEAT_KEY)
    finally:
        store.close()
    age = time.time() - float(beat) if beat else None
    if age is None or age > settings.health_max_age:
        print(f"unhealthy: watcher pid {pid} loop last ran {age and round(age)} s ago",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"healthy: watcher pid {pid}, loop ran {age:.0f} s ago")
    return EXIT_OK
