"""Xet storage on disk, under `<data-dir>/xet/`: xorbs, their chunk indexes, file reconstructions.

    xet/nonce                      per-data-dir random id, part of the casUrl
    xet/xorbs/ab/<hash>            the chunks as uploaded (footer stripped)
    xet/xorbs/ab/<hash>.json       chunk index: [offset, stored size, size] and chunk hashes
    xet/xorbs/ab/<hash>.damaged    marker written by the `corrupt` damage: the bytes are bad
    xet/files/ab/<file hash>.json  a file's terms and declared sha256, from an uploaded shard
    xet/shards/<sha256>            every shard received, verbatim

Every file lands through a temporary file and `os.replace`. A xorb is verified before it is
kept: its chunks decompress to their declared sizes and their merkle hash is the xorb's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.fsutil import atomic_write_bytes

from .xet_format import (
    CHUNK_HEADER_LEN,
    ChunkHeader,
    FileEntry,
    FormatError,
    Term,
    XorbChunk,
    decompress,
    hash_hex,
    merkle_root,
    read_chunks,
)

log = logging.getLogger(__name__)

INDEX_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class XorbIndex:
    """Where each chunk of a stored xorb is: offsets into the xorb file, sizes, hashes."""

    offsets: tuple[int, ...]
    stored_sizes: tuple[int, ...]
    sizes: tuple[int, ...]
    hashes: tuple[str, ...]

    @property
    def length(self) -> int:
        return self.offsets[-1] + self.stored_sizes[-1] if self.offsets else 0

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """Stored bytes `[first, last]` (inclusive) of chunks `[start, end)`."""
        return self.offsets[start], self.offsets[end - 1] + self.stored_sizes[end - 1] - 1

    def to_json(self) -> dict:
        return {
            "chunks": [
                list(c) for c in zip(self.offsets, self.stored_sizes, self.sizes, strict=True)
            ],
            "hashes": list(self.hashes),
        }

    @classmethod
    def from_json(cls, raw: dict) -> XorbIndex:
        chunks = raw["chunks"]
        return cls(
            tuple(c[0] for c in chunks),
            tuple(c[1] for c in chunks),
            tuple(c[2] for c in chunks),
            tuple(raw["hashes"]),
        )

    @classmethod
    def build(cls, chunks: list[XorbChunk]) -> XorbIndex:
        return cls(
            tuple(c.offset for c in chunks),
            tuple(c.stored_size for c in chunks),
            tuple(c.size for c in chunks),
            tuple(hash_hex(c.hash) for c in chunks),
        )


class XetStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        for folder in (self.tmp, root / "xorbs", root / "files", root / "shards"):
            folder.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # leftovers of a crash
            stale.unlink(missing_ok=True)
        self.nonce = self._load_nonce(root / "nonce")
        self._lock = threading.Lock()
        # Recently used chunk indexes (a 64 MB xorb's is ~100 KB of Python objects): bounded.
        self._indexes: OrderedDict[str, XorbIndex] = OrderedDict()
        self._indexes_lock = threading.Lock()

    @staticmethod
    def _load_nonce(path: Path) -> str:
        """Kept in the data dir: the client's shard cache is keyed by casUrl, so a fresh data dir
        must get a fresh URL and never be deduplicated against another devhub's xorbs."""
        if not path.exists():
            atomic_write_bytes(path, secrets.token_hex(8).encode())
        return path.read_text().strip()

    # ---- xorbs ------------------------------------------------------------------------

    def xorb_path(self, xorb: str) -> Path:
        return self.root / "xorbs" / xorb[:2] / xorb

    def _index_path(self, xorb: str) -> Path:
        return self.xorb_path(xorb).with_suffix(".json")

    def damage_marker(self, xorb: str) -> Path:
        return self.xorb_path(xorb).with_suffix(".damaged")

    def has_xorb(self, xorb: str) -> bool:
        return self.xorb_path(xorb).is_file() and self._index_path(xorb).is_file()

    def xorb_intact(self, xorb: str) -> bool:
        """Stored and not known to be damaged (the `corrupt` fault leaves a marker)."""
        return self.has_xorb(xorb) and not self.damage_marker(xorb).exists()

    def index(self, xorb: str) -> XorbIndex:
        with self._indexes_lock:
            cached = self._indexes.get(xorb)
        if cached is None:
            cached = XorbIndex.from_json(json.loads(self._index_path(xorb).read_text()))
        self._remember(xorb, cached)
        return cached

    def _remember(self, xorb: str, index: XorbIndex) -> None:
        with self._indexes_lock:
            self._indexes[xorb] = index
            self._indexes.move_to_end(xorb)
            while len(self._indexes) > INDEX_CACHE_ENTRIES:
                self._indexes.popitem(last=False)

    def put_xorb(self, xorb: str, body: Iterable[bytes]) -> bool:
        """Verify and keep an uploaded xorb; False when an intact copy was already stored.

        The body goes to disk first and is then walked one chunk at a time, so memory stays
        bounded whatever the xorb's size. FormatError when it is not the xorb it claims to be.
        """
        staged = self.tmp / uuid.uuid4().hex
        try:
            with open(staged, "wb") as out:
                for piece in body:
                    out.write(piece)
                size = out.tell()
            chunks = self._walk(staged, size)
            computed = hash_hex(merkle_root([(c.hash, c.size) for c in chunks]))
            if computed != xorb:
                raise FormatError(f"xorb content hashes to {computed}, not {xorb}")
            with self._lock:
                if self.xorb_intact(xorb):
                    return False
                index = XorbIndex.build(chunks)
                with open(staged, "r+b") as out:
                    # No fsync, as for LFS objects (devhub.objects.ObjectStore.stage).
                    out.truncate(index.length)  # drop a footer if the client sent one
                final = self.xorb_path(xorb)
                final.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self._index_path(xorb), json.dumps(index.to_json()).encode())
                os.replace(staged, final)
                self.damage_marker(xorb).unlink(missing_ok=True)
            self._remember(xorb, index)
            log.info("xorb %s stored (%d chunks, %d bytes)", xorb, len(chunks), index.length)
            return True
        finally:
            staged.unlink(missing_ok=True)

    @staticmethod
    def _walk(path: Path, size: int) -> list[XorbChunk]:
        with open(path, "rb") as src:
            chunks = [chunk for chunk, _ in read_chunks(src, size)]
        if not chunks:
            raise FormatError("a xorb needs at least one chunk")
        return chunks

    def read_chunk_data(self, xorb: str, start: int, end: int) -> Iterator[bytes]:
        """Decompressed data of chunks `[start, end)` of a stored xorb, one chunk at a time."""
        index = self.index(xorb)
        with open(self.xorb_path(xorb), "rb") as src:
            src.seek(index.offsets[start])
            for _ in range(start, end):
                header = ChunkHeader.parse(src.read(CHUNK_HEADER_LEN))
                yield decompress(header, src.read(header.compressed_size))

    # ---- files and shards -----------------------------------------------------------------

    def _file_path(self, file_hash: str) -> Path:
        return self.root / "files" / file_hash[:2] / f"{file_hash}.json"

    def put_file(self, entry: FileEntry) -> None:
        payload = {
            "file_hash": entry.file_hash,
            "sha256": entry.sha256,
            "terms": [[t.xorb, t.unpacked, t.chunk_start, t.chunk_end] for t in entry.terms],
        }
        atomic_write_bytes(self._file_path(entry.file_hash), json.dumps(payload).encode())

    def get_file(self, file_hash: str) -> FileEntry | None:
        path = self._file_path(file_hash)
        if len(file_hash) != 64 or not path.is_file():
            return None
        raw = json.loads(path.read_text())
        terms = tuple(Term(x, n, s, e) for x, n, s, e in raw["terms"])
        return FileEntry(raw["file_hash"], terms, raw["sha256"])

    def put_shard(self, data: bytes) -> bool:
        """Keep the shard as received; False when the same bytes were already stored."""
        path = self.root / "shards" / hashlib.sha256(data).hexdigest()
        if path.exists():
            return False
        atomic_write_bytes(path, data)
        return True

    def file_bytes(self, entry: FileEntry, start: int, end: int) -> Iterator[bytes]:
        """Bytes `[start, end)` of a file, reconstructed from its xorbs one chunk at a time."""
        pos = 0
        for term in entry.terms:
            if pos >= end:
                return
            if pos + term.unpacked <= start:
                pos += term.unpacked
                continue
            index = self.index(term.xorb)
            first = term.chunk_start
            while first < term.chunk_end and pos + index.sizes[first] <= start:
                pos += index.sizes[first]  # skip whole chunks before the range unread
                first += 1
            for data in self.read_chunk_data(term.xorb, first, term.chunk_end):
                lo, hi = max(start - pos, 0), min(end - pos, len(data))
                if lo < hi:
                    yield data[lo:hi]
                pos += len(data)
                if pos >= end:
                    return

    # ---- damage ----------------------------------------------------------------------------

    def corrupt_chunk(self, xorb: str, chunk: int) -> None:
        """Flip a byte of one stored chunk, keeping sizes (and, where possible, decodability), so
        only a read-back of the content can tell; then mark the xorb damaged."""
        index = self.index(xorb)
        offset = index.offsets[chunk]
        with open(self.xorb_path(xorb), "r+b") as f:
            f.seek(offset)
            header = ChunkHeader.parse(f.read(CHUNK_HEADER_LEN))
            payload = f.read(header.compressed_size)
            pos = _flip_position(header, payload)
            f.seek(offset + CHUNK_HEADER_LEN + pos)
            f.write(bytes([payload[pos] ^ 0xFF]))
            f.flush()
            os.fsync(f.fileno())
        atomic_write_bytes(self.damage_marker(xorb), b"corrupt\n")
        log.info("corrupted chunk %d of xorb %s", chunk, xorb)


def _flip_position(header: ChunkHeader, payload: bytes) -> int:
    """A payload byte whose flip still decompresses to the same length: the data is then merely
    wrong, as with silent storage corruption. LZ4 ends each block with literals, so the bytes
    just before the end mark usually qualify; failing that, the middle (undecodable) is used."""
    middle = len(payload) // 2
    if header.scheme == 0:
        return middle
    original = decompress(header, payload)
    for pos in range(len(payload) - 5, max(len(payload) - 69, 0), -1):
        flipped = payload[:pos] + bytes([payload[pos] ^ 0xFF]) + payload[pos + 1 :]
        try:
            if decompress(header, flipped) != original:
                return pos
        except FormatError:
            continue
    return middle
