"""Where a resumed run starts from: a local checkpoint, or this run's checkpoint on the Hub.

- `latest`: the newest local `checkpoint-<step>` whose completion marker (of this run) matches
  its files, or that has no marker but is a finished save by `shared.completion` (a preemption
  between `trainer_state.json` and the marker); the caller then writes its marker
  (`trainer.callbacks.mark_resumed_checkpoint`) before training continues, so that step is
  never saved, or uploaded, a second time. A half-written folder is never resumed from, nor
  one whose marker no longer matches its files.
- `hub`: the same local checkpoint, unless the Hub holds a newer one of this run (local copies
  pruned by the uploader); that one is downloaded, verified and placed (`hub_restore`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.completion import Unfinished, finished_save
from shared.layout import FolderRef, Kind, list_folders, run_info_path
from shared.markers import MarkerError, read_marker
from trainer.errors import ResumeError
from trainer.hub_restore import HfHubClient, HubClient, restore_newest

log = logging.getLogger(__name__)

ResumeMode = Literal["latest", "hub"]
TOKEN_HINT = "set HF_TOKEN or HF_TOKEN_FILE, or use --resume latest for local checkpoints"


@dataclass(frozen=True)
class HubAccess:
    """How to reach this run's checkpoint repos; built by the CLI from settings and the token."""

    endpoint: str
    token: str | None
    namespace: str | None
    prefix: str


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    step: int
    origin_repo: str | None = None
    marked: bool = True  # False: a finished save without its marker, to be marked on resume


def latest_local(output_dir: Path, run_id: str | None) -> ResumePoint | None:
    """The newest local checkpoint whose marker matches its files (and names this run), or that
    has no marker but is a finished save (`shared.completion`)."""
    output_dir = Path(output_dir)
    checkpoints = [r for r in list_folders(output_dir) if r.kind is Kind.CHECKPOINT]
    for ref in sorted(checkpoints, key=lambda r: r.step or 0, reverse=True):
        try:
            marker = read_marker(output_dir, ref.name)
        except MarkerError as exc:
            log.warning("checkpoint skipped: unreadable marker",
                        extra={"folder": ref.name, "error": str(exc)})
            continue
        if marker is None:
            point = _unmarked(ref.path(output_dir), ref)
            if point is not None:
                return point
            continue
        if marker.step != ref.step:
            continue
        if run_id is not None and marker.run_id != run_id:
            continue
        if marker.matches(ref.path(output_dir)):
            return ResumePoint(ref.path(output_dir), marker.step, marker.origin_repo)
        log.info("checkpoint skipped: files changed since its marker", extra={"folder": ref.name})
    return None


def _unmarked(path: Path, ref: FolderRef) -> ResumePoint | None:
    """A finished save without a marker: saved completely, preempted before its marker."""
    try:
        step = finished_save(path, ref)
    except Unfinished as exc:
        log.info("checkpoint skipped: no completion marker and not a finished save",
                 extra={"folder": ref.name, "reason": exc.reason})
        return None
    log.warning("checkpoint saved completely but not marked (a preemption between the save and "
                "its marker); resuming from it", extra={"folder": ref.name, "step": step})
    return ResumePoint(path, step, None, marked=False)


def _restore_from_hub(
    output_dir: Path, run_id: str, access: HubAccess, client: HubClient, newer_than: int
) -> ResumePoint | None:
    try:
        namespace = access.namespace or client.whoami()
        restored = restore_newest(output_dir, client, namespace=namespace, prefix=access.prefix,
                                  run_id=run_id, newer_than=newer_than)
    except Exception as exc:  # the Hub unreachable or refusing the token
        log.warning("restore from the hub failed", exc_info=True)
        raise ResumeError(
            f"--resume hub: cannot reach {access.endpoint} ({type(exc).__name__}: {exc})",
            hint="check HF_ENDPOINT, the token and HUB_NAMESPACE",
        ) from exc
    return None if restored is None else ResumePoint(restored.path, restored.step,
                                                     restored.repo_id)


def resolve_resume(
    mode: ResumeMode,
    output_dir: Path,
    run_id: str | None,
    access: HubAccess,
    client_factory: Callable[[HubAccess], HubClient] | None = None,
) -> ResumePoint:
    """The checkpoint to resume from; ResumeError (one line and a hint) when there is none."""
    local = latest_local(output_dir, run_id)
    if mode == "latest":
        if local is None:
            raise ResumeError(
                f"nothing to resume from: no checkpoint in {output_dir} is a finished save "
                "(a completion marker matching its files, or all its files written)",
                hint="--resume hub to restore this run's checkpoint from the Hub, or start "
                "without --resume",
            )
        return local
    if access.token is None:
        raise ResumeError("--resume hub needs a Hub token", hint=TOKEN_HINT)
    if run_id is None:
        raise ResumeError(
            f"--resume hub needs this run's id, but {run_info_path(output_dir)} is missing",
            hint="start without --resume (a new run)",
        )
    client = (client_factory or _hf_client)(access)
    newer_than = local.step if local else -1
    restored = _restore_from_hub(output_dir, run_id, access, client, newer_than)
    if restored is not None:
        return restored
    if local is not None:
        log.info("no newer checkpoint on the hub; resuming locally", extra={"step": local.step})
        return local
    raise ResumeError(
        f"nothing to resume from: no local checkpoint and no verifiable checkpoint repo of run "
        f"{run_id} named {access.prefix}-checkpoint-* on {access.endpoint}",
        hint="start without --resume (a new run)",
    )


def _hf_client(access: HubAccess) -> HubClient:
    assert access.token is not None
    return HfHubClient(access.endpoint, access.token)
