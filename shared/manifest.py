"""`checkpoint_manifest.json`: uploaded with every checkpoint, it says what the repo must hold.

It lists every file with size and sha256 (the uploader's verification and the trainer's
`--resume hub` check both read it), which files the uploader generated rather than copied
(the model card), the run id that scopes `best`, `cleanup` and resume, and the metrics the
checkpoint was saved with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.layout import TRAINER_STATE_FILENAME, Kind

MANIFEST_FILENAME = "checkpoint_manifest.json"
SCHEMA_VERSION = 1


class ManifestError(ValueError):
    """A manifest that cannot be parsed or does not describe what it claims."""


@dataclass(frozen=True, order=True)
class ManifestFile:
    path: str
    size: int
    sha256: str
    generated: bool = False  # made by the uploader (model card), not copied from the folder


@dataclass(frozen=True)
class Manifest:
    run_id: str
    step: int
    kind: Kind
    files: tuple[ManifestFile, ...]
    source_host: str
    folder: str
    created_at: str
    base_model: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @property
    def generated_files(self) -> list[str]:
        return [f.path for f in self.files if f.generated]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> ManifestFile | None:
        return next((f for f in self.files if f.path == path), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["files"] = [asdict(f) for f in sorted(self.files)]
        data["generated_files"] = self.generated_files
        return data

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        try:
            manifest = cls(
                run_id=str(data["run_id"]),
                step=int(data["step"]),
                kind=Kind(data["kind"]),
                files=tuple(
                    sorted(
                        ManifestFile(str(f["path"]), int(f["size"]), str(f["sha256"]),
                                     bool(f.get("generated", False)))
                        for f in data["files"]
                    )
                ),
                source_host=str(data.get("source_host", "")),
                folder=str(data.get("folder", "")),
                created_at=str(data.get("created_at", "")),
                base_model=data.get("base_model"),
                metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
                schema=int(data.get("schema", SCHEMA_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed {MANIFEST_FILENAME}: {exc}") from exc
        if manifest.schema > SCHEMA_VERSION:
            raise ManifestError(
                f"{MANIFEST_FILENAME} schema {manifest.schema} is newer than this version "
                f"understands ({SCHEMA_VERSION}); upgrade checkpoint-sidecar"
            )
        return manifest

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            return cls.from_json(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{MANIFEST_FILENAME} is not JSON: {exc}") from exc


def read_metrics(folder_path: Path) -> dict[str, float]:
    """The metrics a checkpoint was saved with, from its `trainer_state.json`.

    The eval entry for step N is already in checkpoint N's log history; the newest value of each
    numeric key wins, plus `best_metric` when Trainer tracked one. Missing or unreadable state
    gives no metrics rather than an error: metrics decorate a checkpoint, they never block it.
    """
    path = Path(folder_path) / TRAINER_STATE_FILENAME
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    metrics: dict[str, float] = {}
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if (key.startswith("eval_") and isinstance(value, int | float)) or (key in ("loss", "train_loss") and isinstance(value, int | float)):
                metrics[key] = float(value)
    if isinstance(state.get("epoch"), int | float):
        metrics["epoch"] = float(state["epoch"])
    if isinstance(state.get("best_metric"), int | float):
        metrics["best_metric"] = float(state["best_metric"])
    return metrics
