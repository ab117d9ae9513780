"""Which checkpoints matter: the best one by a metric, and what `cleanup` may delete on the Hub.

Selection has two sources. The state knows every verified checkpoint with the metrics it was
saved with (`best_record`); when the state is gone, the Hub still holds one manifest per repo
(`survey` lists this namespace's repos with the prefix, parses their names and reads each
manifest; `best_remote` ranks them). Both are scoped to one run (its `run_info.json` run id).

`plan_cleanup` is pure: given the surveyed repos it says, for each, keep or delete and why. It
never deletes a final adapter, a repo of another run or prefix, or one whose manifest it could
not read or that does not match its name: when in doubt, keep.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.layout import Kind
from shared.manifest import Manifest, ManifestError
from shared.naming import RepoNameError, parse_repo_id
from shared.run_info import RunInfoError, read_run_info
from uploader.errors import UploaderError
from uploader.state import Record, State

if TYPE_CHECKING:
    from uploader.hub import HubClient

log = logging.getLogger(__name__)

DEFAULT_METRIC = "eval_loss"
# States whose remote copy was verified; a pruned one's local folder is gone, its repo is not.
LANDED = frozenset({State.VERIFIED, State.PRUNED})
# States that can still become (or are) a kept copy: what the pruner protects as "the best".
LIVE = frozenset(State) - {State.SUPERSEDED, State.DELETED}


def current_run_id(output_dir: Path) -> str | None:
    """This output dir's run id from `run_info.json`; None when missing or unreadable."""
    try:
        info = read_run_info(output_dir)
    except RunInfoError as exc:
        log.warning("run info unreadable", extra={"error": str(exc)})
        return None
    return info.run_id if info else None


def best_record(records: Iterable[Record], metric: str = DEFAULT_METRIC, *,
                run_id: str | None = None, states: frozenset[State] = LANDED) -> Record | None:
    """The checkpoint record with the lowest `metric` among `states` (ties: the later step).

    Records of another run are skipped when `run_id` is given; a record without a run id
    (a folder detected without a marker) belongs to the output dir's run.
    """
    ranked = [r for r in records
              if r.kind is Kind.CHECKPOINT and r.state in states and usable(r.metrics.get(metric))
              and (run_id is None or r.run_id in (None, run_id))]
    return min(ranked, key=lambda r: (r.metrics[metric], -r.step), default=None)


def usable(value: float | None) -> bool:
    """A metric that can rank: present and not NaN (a diverged eval)."""
    return value is not None and not math.isnan(value)


@dataclass(frozen=True)
class RemoteRepo:
    """One repo of this namespace and prefix, as its name and manifest describe it."""

    repo_id: str
    kind: Kind
    step: int | None
    manifest: Manifest | None
    problem: str | None = None  # why it cannot be judged (the manifest), None when readable

    def metric(self, name: str) -> float | None:
        value = self.manifest.metrics.get(name) if self.manifest else None
        return value if usable(value) else None


def survey(hub: HubClient, namespace: str, prefix: str) -> list[RemoteRepo]:
    """Every repo `make_repo_name` could have made for this namespace and prefix."""
    found: list[RemoteRepo] = []
    for repo_id in hub.list_repos(namespace, prefix):
        try:
            name = parse_repo_id(repo_id)
        except RepoNameError:
            continue  # not a checkpoint or final repo at all
        if name.namespace != namespace or name.prefix != prefix:
            continue  # the search matches substrings: "<prefix>-v2-checkpoint-..." is not ours
        found.append(_read(hub, repo_id, name.kind, name.step))
    return found


def _read(hub: HubClient, repo_id: str, kind: Kind, step: int | None) -> RemoteRepo:
    try:
        manifest = hub.read_manifest(repo_id)
    except (ManifestError, UploaderError) as exc:
        return RemoteRepo(repo_id, kind, step, None, f"manifest unreadable: {exc}")
    if manifest is None:
        return RemoteRepo(repo_id, kind, step, None, "no manifest (an interrupted upload?)")
    if manifest.kind is not kind or (kind is Kind.CHECKPOINT and manifest.step != step):
        return RemoteRepo(repo_id, kind, step, None,
                          f"manifest describes {manifest.kind} step {manifest.step}, not the "
                          "checkpoint its name says")
    return RemoteRepo(repo_id, kind, step, manifest)


def best_remote(repos: Iterable[RemoteRepo], run_id: str,
                metric: str = DEFAULT_METRIC) -> RemoteRepo | None:
    """This run's checkpoint repo with the lowest `metric` in its manifest (ties: later step)."""
    ranked = [r for r in repos if r.kind is Kind.CHECKPOINT and r.manifest is not None
              and r.manifest.run_id == run_id and r.metric(metric) is not None]
    return min(ranked, key=lambda r: (r.metric(metric), -(r.step or 0)), default=None)


class Action(enum.StrEnum):
    KEEP = "keep"
    DELETE = "delete"


@dataclass(frozen=True)
class CleanupItem:
    repo: RemoteRepo
    action: Action
    reason: str


def plan_cleanup(repos: Iterable[RemoteRepo], run_id: str, *, keep_best: int, keep_latest: int,
                 metric: str = DEFAULT_METRIC) -> list[CleanupItem]:
    """Keep or delete, for every surveyed repo, in step order (finals last)."""
    repos = sorted(repos, key=lambda r: (r.kind is Kind.FINAL, r.step or 0, r.repo_id))
    ours = [r for r in repos if r.kind is Kind.CHECKPOINT and r.manifest is not None
            and r.manifest.run_id == run_id]
    ranked = sorted((r for r in ours if r.metric(metric) is not None),
                    key=lambda r: (r.metric(metric), -(r.step or 0)))
    best = {r.repo_id for r in ranked[:keep_best]}
    newest = {r.repo_id for r in sorted(ours, key=lambda r: -(r.step or 0))[:keep_latest]}
    items = []
    for repo in repos:
        reason = _keep_reason(repo, run_id, best, newest, metric)
        action = Action.KEEP if reason else Action.DELETE
        if action is Action.DELETE:
            value = repo.metric(metric)
            reason = f"{metric} {value:.4f}" if value is not None else f"no {metric}"
        items.append(CleanupItem(repo, action, reason or ""))
    return items


def _keep_reason(repo: RemoteRepo, run_id: str, best: set[str], newest: set[str],
                 metric: str) -> str | None:
    if repo.problem is not None or repo.manifest is None:
        return repo.problem or "manifest unreadable"
    if repo.manifest.run_id != run_id:
        return f"another run ({repo.manifest.run_id})"
    if repo.kind is Kind.FINAL:
        return "final adapter"
    if repo.repo_id in best:
        return f"among the best by {metric}"
    if repo.repo_id in newest:
        return "among the newest"
    return None
