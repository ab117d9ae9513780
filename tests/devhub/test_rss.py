"""Uploads and downloads stream through devhub: its memory stays flat for large LFS and Xet files."""

import os
import threading
from pathlib import Path

import psutil
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download

from .conftest import USERS, make_hub

MB = 1024 * 1024
RSS_LIMIT = 200 * MB


def write_random(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        for _ in range(size // MB):
            out.write(os.urandom(MB))
    return path


class PeakRss:
    """Samples a process's RSS in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_large_lfs_transfers_keep_server_memory_low(tmp_path: Path) -> None:
    """224 MB, more than the limit: any copy held in memory would show in the peak."""
    size = 224 * MB
    data = write_random(tmp_path / "weights.safetensors", size)
    # First as one basic PUT (chunk size above the file size)...
    with make_hub(tmp_path / "hub", multipart_chunk_size=256 * MB) as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/basic")
        with PeakRss(hub.pid) as rss:
            api.upload_file(path_or_fileobj=data, path_in_repo=data.name, repo_id="alice/basic")
        assert [
            e["bytes_in"]
            for e in hub.log()
            if e["path"].startswith("/_lfs/") and e["method"] == "PUT"
        ] == [size]
        assert rss.peak < RSS_LIMIT, f"basic upload: devhub peaked at {rss.peak / MB:.0f} MB"
    # ...then multipart into another repo (which must receive the bytes itself), then download.
    with make_hub(tmp_path / "hub", multipart_chunk_size=64 * MB) as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/multipart")
        with PeakRss(hub.pid) as rss:
            api.upload_file(path_or_fileobj=data, path_in_repo=data.name, repo_id="alice/multipart")
            got = hf_hub_download(
                "alice/multipart",
                data.name,
                endpoint=hub.url,
                token=USERS["alice"],
                cache_dir=tmp_path / "cache",
            )
        parts = [e for e in hub.log() if "/part/" in e["path"]]
        assert len(parts) == 4
        assert os.path.getsize(got) == size
        assert rss.peak < RSS_LIMIT, (
            f"multipart upload + download: devhub peaked at {rss.peak / MB:.0f} MB"
        )


@pytest.mark.slow
def test_large_xet_transfers_keep_server_memory_low(
    tmp_path: Path, xet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Xorbs (up to 64 MB each, several in flight) are staged to disk and walked chunk by chunk;
    downloads are served as byte ranges of stored xorbs or rebuilt chunk by chunk."""
    size = 224 * MB
    data = write_random(tmp_path / "weights.safetensors", size)
    with make_hub(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.url, token=USERS["alice"])
        api.create_repo("alice/xet")
        with PeakRss(hub.pid) as rss:
            api.upload_file(path_or_fileobj=data, path_in_repo=data.name, repo_id="alice/xet")
            xorbs = [e for e in hub.log() if "/v1/xorbs/" in e["path"] and e["status"] == 200]
            assert sum(e["bytes_in"] for e in xorbs) >= size
            got = hf_hub_download(
                "alice/xet",
                data.name,
                endpoint=hub.url,
                token=USERS["alice"],
                cache_dir=tmp_path / "xet-cache",
            )
            assert os.path.getsize(got) == size
            os.unlink(got)
            monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain GET, rebuilt
            got = hf_hub_download(
                "alice/xet",
                data.name,
                endpoint=hub.url,
                token=USERS["alice"],
                cache_dir=tmp_path / "http-cache",
            )
        assert os.path.getsize(got) == size
        assert rss.peak < RSS_LIMIT, (
            f"xet upload + downloads: devhub peaked at {rss.peak / MB:.0f} MB"
        )
