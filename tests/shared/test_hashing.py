"""shared.hashing: the digests the uploader compares with what the Hub lists."""

import hashlib

from shared.hashing import LFS_ONLY_SIZE, digest_file, git_blob_sha1


def test_digest_reads_once_and_skips_the_sha1_where_the_hub_lists_only_sha256(tmp_path):
    small, large = tmp_path / "small.json", tmp_path / "large.bin"
    small.write_bytes(b'{"r": 16}')
    large.write_bytes(b"\1" * LFS_ONLY_SIZE)
    assert digest_file(small).git_sha1 == git_blob_sha1(b'{"r": 16}')
    big = digest_file(large)
    assert big.git_sha1 is None and big.size == LFS_ONLY_SIZE
    assert big.sha256 == hashlib.sha256(b"\1" * LFS_ONLY_SIZE).hexdigest()
