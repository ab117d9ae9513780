"""Test helpers that play the uploader's part: a manifest for a local checkpoint folder, and a
Hub double backed by local folders (for fault injection; devhub is the real one)."""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.hashing import digest_file
from shared.layout import Kind
from shared.manifest import MANIFEST_FILENAME, Manifest, ManifestFile

MODEL_CARD = "README.md"


def manifest_for(folder: Path, *, run_id: str, step: int, card: bytes | None = None) -> Manifest:
    """The manifest the uploader would write; `card` adds a generated model card to it."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if card is not None and rel == MODEL_CARD:
            continue
        digest = digest_file(path)
        files.append(ManifestFile(rel, digest.size, digest.sha256))
    if card is not None:
        (folder / MODEL_CARD).write_bytes(card)
        digest = digest_file(folder / MODEL_CARD)
        files.append(ManifestFile(MODEL_CARD, digest.size, digest.sha256, generated=True))
    return Manifest(run_id=run_id, step=step, kind=Kind.CHECKPOINT, files=tuple(files),
                    source_host="test", folder=f"checkpoint-{step}",
                    created_at="2026-01-01T00:00:00Z")


class FolderHub:
    """A `HubClient` whose repos are local folders: `repos[repo_id] = folder`."""

    def __init__(self, user: str = "alice") -> None:
        self.user = user
        self.repos: dict[str, Path] = {}
        self.downloads: list[tuple[str, str]] = []

    def publish(self, repo_id: str, folder: Path, manifest: Manifest, root: Path) -> Path:
        remote = root / repo_id.replace("/", "--")
        shutil.copytree(folder, remote)
        (remote / MANIFEST_FILENAME).write_bytes(manifest.to_bytes())
        self.repos[repo_id] = remote
        return remote

    def whoami(self) -> str:
        return self.user

    def search_repos(self, namespace: str, search: str) -> list[str]:
        return [r for r in self.repos if r.startswith(f"{namespace}/") and search in r]

    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        self.downloads.append((repo_id, filename))
        source = self.repos[repo_id] / filename
        if not source.is_file():
            raise FileNotFoundError(f"404: {repo_id}/{filename}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target
