"""Restoring this run's newest checkpoint from its Hub repos, verified against the manifest.

The story: list `{namespace}/{prefix}-checkpoint-*` repos, keep those whose
`checkpoint_manifest.json` names this run, newest step first; download one into
`<output_dir>/.restore-tmp-*` (never a `checkpoint-*` name, which rotation would delete), check
every file's size and sha256 against the manifest (the next older repo on any failure), move the
non-generated files into `checkpoint-<step>` and write a marker naming the origin repo, so the
uploader knows the folder is already on the Hub.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from shared.hashing import digest_file
from shared.layout import Kind, checkpoint_name
from shared.manifest import MANIFEST_FILENAME, Manifest, ManifestError
from shared.markers import build_marker, remove_marker, write_marker
from shared.naming import RepoNameError, parse_repo_id

log = logging.getLogger(__name__)

RESTORE_TMP_PREFIX = ".restore-tmp-"


class HubClient(Protocol):
    """The few Hub calls a restore needs; `HfHubClient` is the real one.

    `download` raises FileNotFoundError when the repo or the file is not there (any more);
    other errors (network, auth) abort the restore rather than fall back to an older repo.
    """

    def whoami(self) -> str: ...

    def search_repos(self, namespace: str, search: str) -> list[str]: ...

    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path: ...


class HfHubClient:
    """`HubClient` over `huggingface_hub.HfApi`, for one endpoint and token."""

    def __init__(self, endpoint: str, token: str) -> None:
        from huggingface_hub import HfApi

        self._api = HfApi(endpoint=endpoint, token=token)

    def whoami(self) -> str:
        return str(self._api.whoami()["name"])

    def search_repos(self, namespace: str, search: str) -> list[str]:
        return [model.id for model in self._api.list_models(author=namespace, search=search)]

    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            return Path(self._api.hf_hub_download(repo_id, filename, local_dir=local_dir))
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise FileNotFoundError(f"{repo_id}/{filename} not found: {exc}") from exc


class RestoreError(Exception):
    """One candidate repo could not be restored; the next older one is tried."""


@dataclass(frozen=True)
class Candidate:
    repo_id: str
    manifest: Manifest


@dataclass(frozen=True)
class Restored:
    path: Path
    step: int
    repo_id: str


def _read_manifest(client: HubClient, repo_id: str, scratch: Path) -> Manifest | None:
    try:
        path = client.download(repo_id, MANIFEST_FILENAME, scratch / repo_id.replace("/", "--"))
        return Manifest.from_bytes(path.read_bytes())
    except ManifestError as exc:
        log.warning("checkpoint repo skipped: bad manifest",
                    extra={"repo_id": repo_id, "error": str(exc)})
    except FileNotFoundError:  # still uploading, or deleted since the listing
        log.info("checkpoint repo skipped: no manifest", extra={"repo_id": repo_id})
    return None


def find_candidates(
    client: HubClient, namespace: str, prefix: str, run_id: str, scratch: Path,
    newer_than: int = -1,
) -> list[Candidate]:
    """This run's checkpoint repos above step `newer_than`, newest step first (newest repo
    first within a step). Only manifests are downloaded here."""
    found: list[tuple[int, str, Candidate]] = []
    for repo_id in client.search_repos(namespace, f"{prefix}-checkpoint-"):
        try:
            name = parse_repo_id(repo_id)
        except RepoNameError:
            continue
        if (name.kind is not Kind.CHECKPOINT or name.prefix != prefix
                or name.namespace != namespace or (name.step or 0) <= newer_than):
            continue
        manifest = _read_manifest(client, repo_id, scratch)
        if manifest is None or manifest.run_id != run_id:
            continue
        if manifest.kind is not Kind.CHECKPOINT or manifest.step != name.step:
            log.warning("checkpoint repo skipped: manifest disagrees with its name",
                        extra={"repo_id": repo_id, "manifest_step": manifest.step})
            continue
        found.append((manifest.step, name.timestamp.isoformat(), Candidate(repo_id, manifest)))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [candidate for _, _, candidate in found]


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise RestoreError(f"manifest lists an unsafe path {path!r}")
    return rel


def download_verified(client: HubClient, candidate: Candidate, folder: Path) -> Path:
    """Download every manifest file into `folder/download`, verify it, then place the
    non-generated ones into `folder/checkpoint`; return that folder."""
    download_dir, placed = folder / "download", folder / "checkpoint"
    files = [(entry, _safe_relative(entry.path)) for entry in candidate.manifest.files]
    for entry, _rel in files:
        try:
            path = client.download(candidate.repo_id, entry.path, download_dir)
        except FileNotFoundError as exc:
            raise RestoreError(f"{entry.path} is missing from the repo") from exc
        digest = digest_file(path)
        if digest.size != entry.size or digest.sha256 != entry.sha256:
            raise RestoreError(
                f"{entry.path}: sha256 {digest.sha256[:12]} / {digest.size} B does not match "
                f"the manifest's {entry.sha256[:12]} / {entry.size} B"
            )
    for entry, rel in files:
        if entry.generated:
            continue
        target = placed.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(download_dir.joinpath(*rel.parts), target)
    placed.mkdir(exist_ok=True)
    return placed


def _place(output_dir: Path, placed: Path, step: int, scratch: Path) -> Path:
    """Move the verified folder to `checkpoint-<step>`, setting aside a stale local one."""
    target = output_dir / checkpoint_name(step)
    remove_marker(output_dir, target.name)
    if target.exists():
        os.replace(target, scratch / "stale-local-copy")
    os.replace(placed, target)
    return target


def restore_newest(
    output_dir: Path, client: HubClient, *, namespace: str, prefix: str, run_id: str,
    newer_than: int = -1,
) -> Restored | None:
    """Restore this run's newest checkpoint with a step above `newer_than`; None if none can be.

    Each candidate is downloaded into its own temporary folder, removed afterwards whatever
    happens; a failed candidate is logged and the next older one tried.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=RESTORE_TMP_PREFIX, dir=output_dir))
    try:
        candidates = find_candidates(client, namespace, prefix, run_id, scratch / "manifests",
                                     newer_than)
        log.info("hub checkpoints of this run", extra={"run_id": run_id, "count": len(candidates),
                                                        "repos": [c.repo_id for c in candidates]})
        for index, candidate in enumerate(candidates):
            folder = scratch / f"candidate-{index}"
            try:
                placed = download_verified(client, candidate, folder)
            except RestoreError as exc:
                log.warning("hub checkpoint rejected, trying the next older one",
                            extra={"repo_id": candidate.repo_id, "error": str(exc)})
                continue
            step = candidate.manifest.step
            target = _place(output_dir, placed, step, scratch)
            marker = build_marker(output_dir, target.name, run_id=run_id, step=step,
                                  origin_repo=candidate.repo_id)
            write_marker(output_dir, marker)
            log.info("checkpoint restored from the hub",
                     extra={"repo_id": candidate.repo_id, "step": step, "path": str(target)})
            return Restored(target, step, candidate.repo_id)
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
