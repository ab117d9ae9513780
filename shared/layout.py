"""The output dir's layout: which folders are checkpoints and where everything else lives.

    <output_dir>/
      checkpoint-<step>/        written by Trainer, in place (not atomically)
      final/                    the final adapter (adapter, tokenizer, config, eval_results.json)
      run_info.json             the run's identity and outcome (`run_info`)
      .complete/<folder>.json   completion markers (`markers`)
      .uploader/                the uploader's state and staging (default state dir)

Nothing but Trainer's own folders may match `checkpoint-*` directly in the output dir:
rotation (`save_total_limit`) deletes the oldest `checkpoint-*` entries by mtime, and
`get_last_checkpoint` resumes from the highest one.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
FINAL_DIRNAME = "final"
RUN_INFO_FILENAME = "run_info.json"
MARKERS_DIRNAME = ".complete"
UPLOADER_DIRNAME = ".uploader"
TRAINER_STATE_FILENAME = "trainer_state.json"

# Trainer names folders f"checkpoint-{global_step}": canonical decimal only, so that
# "checkpoint-007" and "checkpoint-7" can never be two versions of one step.
_CHECKPOINT_RE = re.compile(r"checkpoint-(0|[1-9][0-9]{0,17})")


class Kind(enum.StrEnum):
    CHECKPOINT = "checkpoint"
    FINAL = "final"


@dataclass(frozen=True, order=True)
class FolderRef:
    """A folder of the output dir that is uploadable: a checkpoint or the final adapter."""

    kind: Kind
    name: str
    step: int | None  # None for the final adapter until its marker or trainer state says

    def path(self, output_dir: Path) -> Path:
        return Path(output_dir) / self.name


def parse_checkpoint_name(name: str) -> int | None:
    """The step of a checkpoint folder name, or None for anything else.

    >>> parse_checkpoint_name("checkpoint-50"), parse_checkpoint_name("checkpoint-../x")
    (50, None)
    """
    match = _CHECKPOINT_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def checkpoint_name(step: int) -> str:
    if step < 0:
        raise ValueError(f"a checkpoint step is a non-negative integer, not {step}")
    return f"{CHECKPOINT_PREFIX}{step}"


def classify(name: str) -> FolderRef | None:
    """The FolderRef for a direct child of the output dir, or None if it is not uploadable."""
    if name == FINAL_DIRNAME:
        return FolderRef(Kind.FINAL, name, None)
    step = parse_checkpoint_name(name)
    if step is None:
        return None
    return FolderRef(Kind.CHECKPOINT, name, step)


def list_folders(output_dir: Path) -> list[FolderRef]:
    """Uploadable folders directly in the output dir (real directories only, no symlinks)."""
    refs: list[FolderRef] = []
    try:
        with os.scandir(output_dir) as entries:
            for entry in entries:  # d_type, no stat per entry: 10,000 folders every rescan
                ref = classify(entry.name)
                if ref is not None and entry.is_dir(follow_symlinks=False):
                    refs.append(ref)
    except FileNotFoundError:
        return refs
    return sorted(refs, key=lambda r: (r.kind == Kind.FINAL, r.step or 0, r.name))


def run_info_path(output_dir: Path) -> Path:
    return Path(output_dir) / RUN_INFO_FILENAME


def markers_dir(output_dir: Path) -> Path:
    return Path(output_dir) / MARKERS_DIRNAME


def marker_path(output_dir: Path, folder_name: str) -> Path:
    if classify(folder_name) is None:
        raise ValueError(f"{folder_name!r} is neither a checkpoint folder nor {FINAL_DIRNAME!r}")
    return markers_dir(output_dir) / f"{folder_name}.json"


def default_state_dir(output_dir: Path) -> Path:
    return Path(output_dir) / UPLOADER_DIRNAME
