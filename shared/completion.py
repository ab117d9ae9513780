"""Is a folder a finished Trainer save? The rules for a folder without a completion marker.

Trainer writes a checkpoint in place, `trainer_state.json` last; the marker (`shared.markers`)
comes after that, from `on_save`. A folder without one is a finished save when:

- no temporary file is left (`.tmpXXXX` from safetensors' rename-into-place, `*.tmp`);
- the expected files are there: weights (adapter, full model, DeepSpeed or FSDP shards),
  `adapter_config.json` next to adapter weights, and for a checkpoint `trainer_state.json`;
- every JSON file parses, every safetensors header is valid, every shard an index names exists;
- `trainer_state.json`'s `global_step` is the step in the folder's name.

The uploader applies them (with a settle window on top) to folders of trainers that write no
markers, or once the run ended; the trainer applies them to resume from a checkpoint that was
saved completely but preempted before its marker, and then writes that marker. One module, so
both sides always agree on what "finished" means.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from shared.layout import TRAINER_STATE_FILENAME, FolderRef, Kind

# safetensors refuses headers above this size; a larger length field means a corrupt file.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
SAFETENSORS_LENGTH_BYTES = 8

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
ADAPTER_CONFIG = "adapter_config.json"
EVAL_RESULTS = "eval_results.json"
DEEPSPEED_DIR_PREFIX = "global_step"
FSDP_MODEL_DIR = "pytorch_model_fsdp_0"


class Unfinished(Exception):
    """Why a folder is not a finished save.

    `final` is False while the save may still be under way (a file missing, a JSON file that
    does not parse yet); True when the folder, as it is, can never become one (a step that
    contradicts its name, a file this user cannot read).
    """

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


def is_temporary(path: str) -> bool:
    """`.tmpXXXX` (safetensors' rename-into-place) or `*.tmp` anywhere in the path."""
    return any(part.startswith(".tmp") or part.endswith(".tmp") for part in path.split("/"))


def check_safetensors_header(path: Path) -> str | None:
    """Why a safetensors file is unreadable, or None: 8-byte LE length, JSON, offsets in range."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(SAFETENSORS_LENGTH_BYTES)
        if len(head) < SAFETENSORS_LENGTH_BYTES:
            return f"{size} bytes is too short for a safetensors header"
        length = int.from_bytes(head, "little")
        if length == 0 or length > MAX_SAFETENSORS_HEADER:
            return f"header length {length} is out of range"
        if SAFETENSORS_LENGTH_BYTES + length > size:
            return f"header length {length} exceeds the file size {size}"
        try:
            header = json.loads(fh.read(length))
        except ValueError as exc:
            return f"header is not JSON: {exc}"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    data_bytes = size - SAFETENSORS_LENGTH_BYTES - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = int(info["data_offsets"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return f"tensor {name!r} has no valid data_offsets"
        if end > data_bytes:
            return f"tensor {name!r} ends at {end} but only {data_bytes} data bytes exist"
    return None


def walk_folder(folder: Path | str) -> list[tuple[str, os.stat_result]]:
    """Every entry under `folder` but directories, as ('/'-separated relative path, lstat),
    plus the folder's own lstat first under "" (directories' mtimes count for settling).

    lstat only: a symlink is listed as itself and never followed. Plain strings, not Path
    objects: the uploader walks every folder on every rescan. FileNotFoundError or
    NotADirectoryError when the folder is not there.
    """
    root = os.fspath(folder)
    entries: list[tuple[str, os.stat_result]] = [("", os.stat(root, follow_symlinks=False))]
    skip = len(root.rstrip(os.sep)) + 1
    pending = [root]
    while pending:
        current = pending.pop()
        with os.scandir(current) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
                    entries.append(("/", st))  # a directory: only its mtime matters
                    continue
                rel = entry.path[skip:]
                entries.append((rel.replace(os.sep, "/") if os.sep != "/" else rel, st))
    return entries


def list_files(folder: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(every non-directory path, the regular files among them) under `folder`, '/'-separated.

    lstat only: a symlink is listed as itself and never read. FileNotFoundError or
    NotADirectoryError when the folder is not there.
    """
    names: set[str] = set()
    regular: set[str] = set()
    for rel, st in walk_folder(folder):
        if rel in ("", "/"):
            continue
        names.add(rel)
        if stat.S_ISREG(st.st_mode):
            regular.add(rel)
    return frozenset(names), frozenset(regular)


def require_no_temporary(names: frozenset[str]) -> None:
    temporary = sorted(p for p in names if is_temporary(p))
    if temporary:
        raise Unfinished(f"temporary file {temporary[0]} present")


def has_weights(names: frozenset[str]) -> bool:
    if any(name in names for name in (*ADAPTER_WEIGHTS, *FULL_WEIGHTS)):
        return True
    return any(
        "/" in name and (name.startswith(DEEPSPEED_DIR_PREFIX) or name.startswith(FSDP_MODEL_DIR + "/"))
        for name in names
    )


def require_files(ref: FolderRef, names: frozenset[str]) -> None:
    """The files every finished save of this kind holds."""
    has_adapter = any(name in names for name in ADAPTER_WEIGHTS)
    if ref.kind is Kind.FINAL and not has_adapter:
        raise Unfinished(f"no adapter weights yet ({' or '.join(ADAPTER_WEIGHTS)})")
    if ref.kind is Kind.CHECKPOINT and not has_weights(names):
        raise Unfinished("no model or adapter weights yet")
    if has_adapter and ADAPTER_CONFIG not in names:
        raise Unfinished(f"{ADAPTER_CONFIG} missing next to the adapter weights")
    if ref.kind is Kind.CHECKPOINT and TRAINER_STATE_FILENAME not in names:
        raise Unfinished(f"waiting for {TRAINER_STATE_FILENAME}")


def read_documents(folder: Path, names: frozenset[str], regular: frozenset[str]) -> dict[str, Any]:
    """Parse every JSON and safetensors header; return the top-level JSON documents needed later."""
    kept: dict[str, Any] = {}
    for rel in sorted(regular):
        path = Path(folder) / rel
        try:
            if rel.endswith(".json"):
                with open(path, encoding="utf-8") as fh:
                    doc = json.load(fh)
                if rel in (TRAINER_STATE_FILENAME, EVAL_RESULTS) or rel.endswith(".index.json"):
                    kept[rel] = doc
            elif rel.endswith(".safetensors") and (problem := check_safetensors_header(path)):
                raise Unfinished(f"{rel} is not a readable safetensors file: {problem}")
        except PermissionError:
            raise Unfinished(
                f"{rel} is not readable by this user: run the uploader with the trainer's UID",
                final=True,
            ) from None
        except ValueError as exc:  # JSON and Unicode errors: maybe half-written
            raise Unfinished(f"{rel} does not parse: {exc}") from None
    require_shards(kept, names)
    return kept


def require_shards(docs: dict[str, Any], names: frozenset[str]) -> None:
    """Every shard a `*.index.json` weight map names must exist next to it."""
    for rel, doc in docs.items():
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not rel.endswith(".index.json") or not isinstance(weight_map, dict):
            continue
        base = rel.rpartition("/")[0]
        for shard in sorted(set(map(str, weight_map.values()))):
            shard_rel = f"{base}/{shard}" if base else shard
            if shard_rel not in names:
                raise Unfinished(f"{rel} names {shard_rel}, which is missing")


def step_of(ref: FolderRef, docs: dict[str, Any]) -> int:
    """The step a finished save holds: a checkpoint's `global_step` must match its name."""
    state = docs.get(TRAINER_STATE_FILENAME)
    global_step = state.get("global_step") if isinstance(state, dict) else None
    if ref.kind is Kind.CHECKPOINT:
        if not isinstance(global_step, int) or isinstance(global_step, bool):
            raise Unfinished(f"{TRAINER_STATE_FILENAME} has no integer global_step", final=True)
        if global_step != ref.step:
            raise Unfinished(
                f"{TRAINER_STATE_FILENAME} says global_step {global_step}, "
                f"the folder name says {ref.step}",
                final=True,
            )
        return global_step
    if isinstance(global_step, int) and not isinstance(global_step, bool) and global_step >= 0:
        return global_step
    results = docs.get(EVAL_RESULTS)
    if isinstance(results, dict):
        for key in ("global_step", "step"):
            value = results.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return int(value)
    return 0


def finished_save(folder: Path, ref: FolderRef) -> int:
    """The step of a folder that is a finished save by the rules above; Unfinished otherwise.

    No settle window: the caller knows nobody is writing the folder (the trainer at resume,
    before training continues) or waits for one itself (the uploader).
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise Unfinished(f"{folder.name} is a symlink", final=True)
    try:
        names, regular = list_files(folder)
        require_no_temporary(names)
        require_files(ref, names)
        docs = read_documents(folder, names, regular)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise Unfinished(f"a file vanished while checked: {exc}") from None
    return step_of(ref, docs)
