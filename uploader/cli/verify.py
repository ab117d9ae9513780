"""`verify`: re-check every verified checkpoint against the Hub and repair what is damaged.

Each remote copy is compared at its commit with the digests kept when it was verified
(paths-info sizes and hashes); `--deep` also downloads every file and hashes the bytes. A copy
uploaded before digests were kept (or restored from the Hub) is checked against its manifest.
A damaged copy goes back to `pending` and is uploaded again from the local folder when that
still holds the version (re-staged from it); when the folder is gone or changed it is reported
loudly and marked `failed`. Exit 0 when every checkpoint is verified at the end, 1 otherwise.
Like `backfill`, it takes the writer's lock: stop `watch` first (or pass --wait-for-lock).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.manifest import ManifestError
from uploader.cli import EXIT_FAILED, EXIT_OK
from uploader.cli.console import ConsoleEvents, one_pass
from uploader.errors import UploaderError
from uploader.pipeline import IMMEDIATE_REUPLOADS, Pipeline
from uploader.readback import Wanted, read_back
from uploader.retention import LANDED, LIVE
from uploader.settings import UploaderSettings
from uploader.state import Record, State

if TYPE_CHECKING:
    from uploader.hub import HubClient, RemoteFile

log = logging.getLogger("uploader.verify")


@dataclass
class Tally:
    intact: list[Record] = field(default_factory=list)
    damaged: list[tuple[Record, str]] = field(default_factory=list)
    unchecked: list[tuple[Record, str]] = field(default_factory=list)
    repaired: list[Record] = field(default_factory=list)  # a fresh read-back proved each


def run(settings: UploaderSettings) -> int:
    with ExitStack() as stack:
        opened, stop = one_pass(settings, stack)
        if opened is None:
            return EXIT_FAILED
        pipeline = opened.pipeline
        pipeline.events = ConsoleEvents()  # the upload block for each repaired copy
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="verify-")))
        tally = check_all(pipeline, settings.deep, scratch, stop)
        repair(pipeline, tally, stop, scratch)
        return _verdict(pipeline, tally)


def check_all(pipeline: Pipeline, deep: bool, scratch: Path, stop: threading.Event) -> Tally:
    tally = Tally()
    for record in pipeline.records():
        if stop.is_set() or record.state not in LANDED:
            continue
        try:
            problem = check(pipeline, record, deep, scratch / str(record.id))
        except UploaderError as exc:
            log.error("cannot check the remote copy", extra={
                "step": record.step, "repo_id": record.repo_id, "error": exc.one_line()})
            tally.unchecked.append((record, exc.one_line()))
            continue
        if problem is None:
            log.info("remote copy intact", extra={"step": record.step, "repo_id": record.repo_id,
                                                  "deep": deep})
            tally.intact.append(record)
        else:
            tally.damaged.append((record, problem))
    return tally


def check(pipeline: Pipeline, record: Record, deep: bool, scratch: Path) -> str | None:
    """What is wrong with `record`'s remote copy, None when intact."""
    expected = pipeline.expected_files(record)
    if expected is None:
        return _check_manifest(pipeline.hub, record, deep, scratch)
    problem = pipeline.recheck(record, expected)
    if problem is None and deep:
        wanted = [Wanted(f.path_in_repo, f.digest.size, f.digest.sha256) for f in expected]
        problem = _summary(record, _downloaded(pipeline.hub, record, wanted, scratch),
                           len(wanted))
    return problem


def _check_manifest(hub: HubClient, record: Record, deep: bool, scratch: Path) -> str | None:
    """No digests were kept: the manifest lists sha256s; regular files are small and are
    downloaded, since paths-info gives only their git sha1."""
    revision = record.commit_sha or "main"
    try:
        manifest = hub.read_manifest(record.repo_id, revision)
    except ManifestError as exc:
        return f"{record.repo_id}: {exc}"
    if manifest is None:
        return f"{record.repo_id}@{revision[:12]}: no checkpoint manifest (repo or commit gone?)"
    remote = hub.paths_info(record.repo_id, revision, [f.path for f in manifest.files])
    problems, download = [], []
    for f in manifest.files:
        found = remote.get(f.path)
        problem = _remote_problem(f.path, f.size, f.sha256, found)
        if problem:
            problems.append(problem)
        elif found is not None and (deep or not found.is_lfs):
            download.append(Wanted(f.path, f.size, f.sha256, found.git_sha1))
    problems += _downloaded(hub, record, download, scratch)
    return _summary(record, problems, len(manifest.files))


def _remote_problem(path: str, size: int, sha256: str, found: RemoteFile | None) -> str | None:
    if found is None:
        return f"{path}: missing on the Hub"
    if found.size != size:
        return f"{path}: size {found.size} on the Hub, {size} expected"
    if found.is_lfs and found.sha256 != sha256:
        return f"{path}: sha256 {(found.sha256 or 'none')[:12]} on the Hub, {sha256[:12]} expected"
    return None


def _downloaded(hub: HubClient, record: Record, wanted: list[Wanted], scratch: Path) -> list[str]:
    return read_back(hub, record.repo_id, record.commit_sha or "main", wanted, scratch)


def _summary(record: Record, problems: list[str], total: int) -> str | None:
    if not problems:
        return None
    return (f"{record.repo_id}: {len(problems)} of {total} files do not match: "
            + "; ".join(problems[:5]))


def repair(pipeline: Pipeline, tally: Tally, stop: threading.Event, scratch: Path) -> None:
    """Back to `pending` (or `failed` when the local copy is gone), upload again now, and
    count a repair only once the new commit's bytes, downloaded afresh, match the local ones."""
    for record, problem in tally.damaged:
        record = pipeline.reopen(record, problem)
        for _ in range(IMMEDIATE_REUPLOADS):
            if stop.is_set() or record.state is not State.PENDING:
                break
            record = pipeline.upload(record)
        if record.state is not State.VERIFIED:
            continue
        try:
            still = check(pipeline, record, True, scratch / f"proof-{record.id}")
        except UploaderError as exc:
            still = f"cannot read the repaired copy back: {exc.one_line()}"
        if still is not None:
            log.error("repair did not take: the remote copy is still damaged", extra={
                "step": record.step, "repo_id": record.repo_id, "error": still})
            pipeline.reopen(record, still)
            continue
        tally.repaired.append(record)
        log.warning("damaged remote copy repaired (read back)", extra={
            "step": record.step, "repo_id": record.repo_id, "commit": record.commit_sha})


def _verdict(pipeline: Pipeline, tally: Tally) -> int:
    records = [r for r in pipeline.records() if r.state in LIVE]
    unverified = [r for r in records if r.state not in LANDED]
    for record in unverified:
        log.error("not verified", extra={"step": record.step, "kind": str(record.kind),
                                         "repo_id": record.repo_id, "state": str(record.state),
                                         "error": record.last_error})
    print(f"checked {len(tally.intact) + len(tally.damaged) + len(tally.unchecked)}: "
          f"{len(tally.intact)} intact, {len(tally.damaged)} damaged "
          f"({len(tally.repaired)} repaired), "
          f"{len(tally.unchecked)} not checkable; {len(unverified)} not verified")
    still_damaged = len(tally.damaged) - len(tally.repaired)
    return EXIT_FAILED if unverified or tally.unchecked or still_damaged else EXIT_OK
