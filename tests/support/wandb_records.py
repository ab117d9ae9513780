"""Read an offline W&B run back from its `.wandb` file, for tests.

wandb 0.31 ships no Python reader for this file any more (`wandb.sdk.internal.datastore` left
with the Python backend; wandb-core, in Go, writes it), so here is a small one. The format is
LevelDB's log format (github.com/google/leveldb/blob/main/doc/log_format.md) with W&B's header:

    header  := b":W&B" | magic uint16 LE (0xBEE1) | version uint8 (0)     7 bytes
    block   := chunk* padding?                                            32 KiB each
    chunk   := crc uint32 LE | length uint16 LE | type uint8 | data[length]
               crc = zlib.crc32(type byte + data); type FULL=1, FIRST=2, MIDDLE=3, LAST=4
    padding := a block tail shorter than a chunk header, zeros

A record too long for the rest of a block is split FIRST, MIDDLE..., LAST. Each whole record is
a `wandb.proto.wandb_internal_pb2.Record`. A file cut short (the writer was killed) ends at its
last whole record; a checksum mismatch is an error. `read_run` folds the records of one file
into what a test asserts on: the run's identity and config, history rows, summary, artifacts.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")
IDENT, MAGIC = b":W&B", 0xBEE1
CHUNK = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """Not a W&B run file, or a damaged one."""


def read_records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        return []
    ident, magic, _version = HEADER.unpack_from(data)
    if ident != IDENT or magic != MAGIC:
        raise WandbFileError(f"{path}: not a W&B run file (header {data[:HEADER.size]!r})")
    records = []
    for payload in _payloads(data, path):
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _payloads(data: bytes, path: Path) -> list[bytes]:
    payloads: list[bytes] = []
    pending: list[bytes] = []
    pos = HEADER.size
    while pos + CHUNK.size <= len(data):
        if BLOCK_SIZE - pos % BLOCK_SIZE < CHUNK.size:
            pos += BLOCK_SIZE - pos % BLOCK_SIZE  # padding at the end of a block
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        chunk = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if kind == 0 and length == 0:
            break  # zeros: preallocated or unwritten tail
        if len(chunk) < length:
            break  # cut short by a kill: the last record never made it
        if zlib.crc32(bytes([kind]) + chunk) != crc:
            raise WandbFileError(f"{path}: checksum mismatch at byte {pos}")
        pos += CHUNK.size + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = [chunk]
        elif kind == MIDDLE:
            pending.append(chunk)
        elif kind == LAST:
            payloads.append(b"".join([*pending, chunk]))
            pending = []
        else:
            raise WandbFileError(f"{path}: unknown chunk type {kind} at byte {pos}")
    return payloads


@dataclass
class Artifact:
    name: str
    type: str
    aliases: list[str]
    metadata: dict[str, Any]
    references: dict[str, str]  # path in the artifact -> reference URL


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    exited: bool = False  # the run was finished (an `exit` record), not killed


def read_run(path: Path) -> OfflineRun:
    run = OfflineRun(Path(path))
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _read_run_record(run, record.run)
        elif kind == "config":
            run.config |= _items(record.config.update)
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary |= _items(record.summary.update)
        elif kind == "artifact":
            run.artifacts.append(_artifact(record.artifact))
        elif kind == "exit":
            run.exited = True
    return run


def _read_run_record(run: OfflineRun, rec: pb.RunRecord) -> None:
    run.run_id, run.project, run.group = rec.run_id, rec.project, rec.run_group
    run.job_type, run.resumed = rec.job_type, rec.resume
    run.config |= _items(rec.config.update)


def _items(items: Any) -> dict[str, Any]:
    """History, summary and config items: `key` or `nested_key` (joined with "/"), JSON."""
    out: dict[str, Any] = {}
    for item in items:
        key = "/".join(item.nested_key) if item.nested_key else item.key
        out[key] = json.loads(item.value_json)
    return out


def _artifact(rec: pb.ArtifactRecord) -> Artifact:
    return Artifact(
        name=rec.name, type=rec.type, aliases=list(rec.aliases),
        metadata=json.loads(rec.metadata) if rec.metadata else {},
        references={entry.path: entry.ref for entry in rec.manifest.contents if entry.ref})


def run_files(wandb_parent: Path) -> list[Path]:
    """Every run file under `<dir>/wandb/` (wandb's `dir=`), oldest run folder first."""
    found = (Path(wandb_parent) / "wandb").glob("*run-*/run-*.wandb")
    return sorted((p for p in found if not p.parent.is_symlink()), key=lambda p: p.parent.name)


def read_runs(wandb_parent: Path) -> list[OfflineRun]:
    return [read_run(path) for path in run_files(wandb_parent)]
