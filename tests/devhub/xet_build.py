"""Hand-built xorbs and shards, to send devhub what the real client never would.

Hashes come from devhub.xet_format; the real-client tests (hf_xet computing the same hashes)
are what shows those functions right.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import lz4.frame

from devhub.xet_format import (
    BOOKEND,
    FLAG_METADATA_EXT,
    SHARD_TAG,
    chunk_hash,
    file_hash,
    hash_from_hex,
    hash_hex,
    merkle_root,
)


@dataclass(frozen=True)
class BuiltXorb:
    hash: str
    body: bytes
    chunks: list[bytes]

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


def _bg4_split(data: bytes) -> bytes:
    return b"".join(data[lane::4] for lane in range(4))


def xorb(chunks: list[bytes], schemes: list[int] | None = None) -> BuiltXorb:
    """A xorb of these chunks; scheme per chunk: 0 none, 1 LZ4, 2 byte grouping + LZ4."""
    schemes = schemes or [0] * len(chunks)
    body = bytearray()
    for data, scheme in zip(chunks, schemes, strict=True):
        if scheme == 0:
            payload = data
        elif scheme == 1:
            payload = lz4.frame.compress(data)
        else:
            payload = lz4.frame.compress(_bg4_split(data))
        body += bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme])
        body += len(data).to_bytes(3, "little") + payload
    name = hash_hex(merkle_root([(chunk_hash(c), len(c)) for c in chunks]))
    return BuiltXorb(name, bytes(body), chunks)


def whole_file_hash(x: BuiltXorb) -> str:
    return hash_hex(file_hash([(chunk_hash(c), len(c)) for c in x.chunks]))


def _entry(raw_hash: bytes, *words: int) -> bytes:
    return raw_hash + struct.pack("<IIII", *words)


def shard(
    files: list[tuple[str, list[tuple[str, int, int, int]], str | None]],
    xorbs: list[BuiltXorb] = (),  # type: ignore[assignment]
) -> bytes:
    """files: (file hash, [(xorb, unpacked, chunk start, chunk end)], sha256 or None)."""
    out = bytearray(SHARD_TAG + struct.pack("<QQ", 2, 200))
    for fh, terms, sha256 in files:
        flags = FLAG_METADATA_EXT if sha256 else 0
        out += _entry(hash_from_hex(fh), flags, len(terms), 0, 0)
        for x, unpacked, start, end in terms:
            out += _entry(hash_from_hex(x), 0, unpacked, start, end)
        if sha256:
            out += hash_from_hex(sha256) + bytes(16)
    out += _entry(BOOKEND, 0, 0, 0, 0)
    for x in xorbs:
        out += _entry(hash_from_hex(x.hash), 0, len(x.chunks), x.size, len(x.body))
        offset = 0
        for c in x.chunks:
            out += _entry(hash_from_hex(hash_hex(chunk_hash(c))), offset, len(c), 0, 0)
            offset += len(c)
    out += _entry(BOOKEND, 0, 0, 0, 0)
    return bytes(out)


def sha256_of(x: BuiltXorb) -> str:
    return hashlib.sha256(b"".join(x.chunks)).hexdigest()
