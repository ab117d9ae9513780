"""Xet wire formats, as devhub reads them: hashes, xorb chunks and shards (MDB v2).

Written from the format description in huggingface/xet-core (`xet_core_structures`):

- A hash is 32 bytes, shown as hex with each 8-byte word read as a little-endian u64 and printed
  most significant digit first (`hash_hex`). Chunk hash: BLAKE3 keyed with `DATA_KEY`. Xorb hash:
  an aggregated tree over `(chunk hash, chunk length)`, cut where a hash's last word % 4 == 0
  (groups of 2..9); interior nodes are BLAKE3 keyed with `NODE_KEY` over lines
  `"{hex} : {length}\\n"`. File hash: the same tree over the file's chunks, then BLAKE3 keyed
  with 32 zero bytes.
- A xorb as uploaded is a sequence of chunks, each an 8-byte header (version u8, compressed size
  u24 LE, scheme u8, uncompressed size u24 LE) and its payload; an optional footer starts with
  `XETBLOB`.
- A shard: a 48-byte header, file entries (header, terms, optional verification entries, optional
  sha256 entry) closed by a bookend, then xorb entries (header, chunk entries) closed by a bookend,
  then an optional footer. Every entry is 48 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import blake3
import lz4.frame

HASH_LEN = 32
CHUNK_HEADER_LEN = 8
ENTRY_LEN = 48
MAX_CHUNK_SIZE = 128 * 1024
XORB_FOOTER_IDENT = b"XETBLOB"
SHARD_TAG = b"HFRepoMetaData\x00" + bytes(
    [85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)
SHARD_HEADER_LEN = 48
BOOKEND = b"\xff" * HASH_LEN
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
# fmt: off
DATA_KEY = bytes([
    102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
    157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41,
])
NODE_KEY = bytes([
    1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
    93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63,
])
# fmt: on
SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2


class FormatError(ValueError):
    """Bytes that are not a valid xorb or shard."""


# ---- hashes ---------------------------------------------------------------------------


def hash_hex(raw: bytes) -> str:
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, HASH_LEN, 8))


def hash_from_hex(text: str) -> bytes:
    if len(text) != 64:
        raise FormatError(f"not a hash: {text!r}")
    try:
        return b"".join(bytes.fromhex(text[i : i + 16])[::-1] for i in range(0, 64, 16))
    except ValueError as err:
        raise FormatError(f"not a hash: {text!r}") from err


def chunk_hash(data: bytes) -> bytes:
    return blake3.blake3(data, key=DATA_KEY).digest()


def _cut(level: list[tuple[bytes, int]], start: int) -> int:
    """End (exclusive) of the group starting at `start`: cut after a hash with last word % 4 == 0."""
    left = len(level) - start
    if left <= 2:
        return len(level)
    end = start + min(9, left)
    for i in range(start + 2, end):
        if struct.unpack_from("<Q", level[i][0], 24)[0] % 4 == 0:
            return i + 1
    return end


def merkle_root(chunks: list[tuple[bytes, int]]) -> bytes:
    """The aggregated hash of `(hash, length)` pairs: a xorb's hash over its chunks."""
    if not chunks:
        return bytes(HASH_LEN)
    level = list(chunks)
    while len(level) > 1:
        merged: list[tuple[bytes, int]] = []
        start = 0
        while start < len(level):
            end = _cut(level, start)
            group = level[start:end]
            text = "".join(f"{hash_hex(h)} : {n}\n" for h, n in group)
            merged.append(
                (blake3.blake3(text.encode(), key=NODE_KEY).digest(), sum(n for _, n in group))
            )
            start = end
        level = merged
    return level[0][0]


def file_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    if not chunks:
        return bytes(HASH_LEN)
    return blake3.blake3(merkle_root(chunks), key=bytes(HASH_LEN)).digest()


# ---- xorbs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkHeader:
    version: int
    compressed_size: int
    scheme: int
    uncompressed_size: int

    @classmethod
    def parse(cls, raw: bytes) -> ChunkHeader:
        if len(raw) != CHUNK_HEADER_LEN:
            raise FormatError("truncated chunk header")
        header = cls(
            raw[0],
            int.from_bytes(raw[1:4], "little"),
            raw[4],
            int.from_bytes(raw[5:8], "little"),
        )
        if header.version != 0:
            raise FormatError(f"unknown chunk header version {header.version}")
        if header.scheme not in (SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4):
            raise FormatError(f"unknown compression scheme {header.scheme}")
        if header.uncompressed_size > MAX_CHUNK_SIZE or header.compressed_size > 2 * MAX_CHUNK_SIZE:
            raise FormatError("chunk larger than the maximum chunk size")
        return header


def _bg4_regroup(data: bytes) -> bytes:
    """Undo byte grouping: the payload holds bytes 0, 4, 8.. then 1, 5, 9.. and so on."""
    n = len(data)
    out = bytearray(n)
    start = 0
    for lane in range(4):
        size = len(range(lane, n, 4))
        out[lane::4] = data[start : start + size]
        start += size
    return bytes(out)


def decompress(header: ChunkHeader, payload: bytes) -> bytes:
    if header.scheme == SCHEME_NONE:
        data = payload
    else:
        try:
            data = lz4.frame.decompress(payload)
        except RuntimeError as err:
            raise FormatError(f"bad LZ4 frame: {err}") from err
        if header.scheme == SCHEME_BG4_LZ4:
            data = _bg4_regroup(data)
    if len(data) != header.uncompressed_size:
        raise FormatError(
            f"chunk decompresses to {len(data)} bytes, header says {header.uncompressed_size}"
        )
    return data


@dataclass(frozen=True)
class XorbChunk:
    offset: int  # where its header starts in the stored xorb
    stored_size: int  # header + payload
    size: int  # uncompressed
    hash: bytes


def read_chunks(src: BinaryIO, limit: int) -> Iterator[tuple[XorbChunk, bytes]]:
    """Walk the chunks of a xorb file up to `limit` bytes (or its footer): (chunk, data).

    One chunk is in memory at a time (at most 2 x 128 KiB), whatever the xorb's size.
    """
    offset = 0
    while offset < limit:
        raw = src.read(CHUNK_HEADER_LEN)
        if raw.startswith(XORB_FOOTER_IDENT):
            return
        header = ChunkHeader.parse(raw)
        payload = src.read(header.compressed_size)
        if len(payload) != header.compressed_size:
            raise FormatError("truncated chunk payload")
        data = decompress(header, payload)
        stored = CHUNK_HEADER_LEN + header.compressed_size
        yield XorbChunk(offset, stored, len(data), chunk_hash(data)), data
        offset += stored


# ---- shards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    xorb: str
    unpacked: int
    chunk_start: int
    chunk_end: int  # exclusive


@dataclass(frozen=True)
class FileEntry:
    file_hash: str
    terms: tuple[Term, ...]
    sha256: str | None

    @property
    def size(self) -> int:
        return sum(t.unpacked for t in self.terms)


@dataclass(frozen=True)
class XorbInfo:
    xorb: str
    chunks: tuple[tuple[str, int, int], ...]  # (chunk hash, byte start, unpacked length)
    unpacked_bytes: int


@dataclass(frozen=True)
class Shard:
    files: tuple[FileEntry, ...]
    xorbs: tuple[XorbInfo, ...]


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError("truncated shard")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def entry(self) -> tuple[bytes, int, int, int, int]:
        raw = self.take(ENTRY_LEN)
        return (raw[:HASH_LEN], *struct.unpack_from("<IIII", raw, HASH_LEN))


def parse_shard(data: bytes) -> Shard:
    cur = _Cursor(data)
    if cur.take(len(SHARD_TAG)) != SHARD_TAG:
        raise FormatError("not a shard (wrong magic tag)")
    version, _footer_size = struct.unpack("<QQ", cur.take(16))
    if version != 2:
        raise FormatError(f"unsupported shard version {version}")
    files: list[FileEntry] = []
    while True:
        raw_hash, flags, count, _, _ = cur.entry()
        if raw_hash == BOOKEND:
            break
        terms = []
        for _ in range(count):
            xorb, _xorb_flags, unpacked, start, end = cur.entry()
            if end <= start:
                raise FormatError("empty chunk range in a file term")
            terms.append(Term(hash_hex(xorb), unpacked, start, end))
        if flags & FLAG_VERIFICATION:
            cur.take(
                ENTRY_LEN * count
            )  # per-term range hashes: only the Hub's own checks need them
        sha256 = None
        if flags & FLAG_METADATA_EXT:
            # The sha256 is stored like every hash, so it prints with the same word order.
            sha256 = hash_hex(cur.take(ENTRY_LEN)[:HASH_LEN])
        files.append(FileEntry(hash_hex(raw_hash), tuple(terms), sha256))
    xorbs: list[XorbInfo] = []
    while True:
        raw_hash, _flags, count, unpacked, _on_disk = cur.entry()
        if raw_hash == BOOKEND:
            break
        chunks = []
        for _ in range(count):
            chunk, start, length, _chunk_flags, _ = cur.entry()
            chunks.append((hash_hex(chunk), start, length))
        xorbs.append(XorbInfo(hash_hex(raw_hash), tuple(chunks), unpacked))
    return Shard(tuple(files), tuple(xorbs))
