"""Peak RSS of devhub while it receives and serves one large LFS file (default 2 GB).

    python bench/devhub_rss.py --size-mb 2048 [--chunk-mb 64] [--limit-mb 200]

Prints one JSON line and exits 1 when the peak is over the limit. The tests check the same
with a few hundred MB (tests/devhub/test_rss.py); this is the full-size run.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from huggingface_hub import HfApi, hf_hub_download

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devhub.testing import DevHub

MB = 1024 * 1024


def write_file(path: Path, size_mb: int) -> None:
    """Distinct 1 MB blocks, written one at a time (the bench itself stays small)."""
    block = os.urandom(MB)
    with open(path, "wb") as out:
        for i in range(size_mb):
            out.write(i.to_bytes(8, "little") + block[8:])


def sample_peak(pid: int, stop: threading.Event, out: list[int]) -> None:
    process = psutil.Process(pid)
    out.append(process.memory_info().rss)
    while not stop.wait(0.05):
        out[0] = max(out[0], process.memory_info().rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--chunk-mb", type=int, default=64, help="devhub multipart chunk size")
    parser.add_argument("--limit-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="devhub-rss-") as tmp:
        root = Path(tmp)
        data = root / "weights.safetensors"
        write_file(data, args.size_mb)
        with DevHub(
            root / "hub", users={"bench": "hf_bench"}, multipart_chunk_size=args.chunk_mb * MB
        ) as hub:
            api = HfApi(endpoint=hub.url, token="hf_bench")
            api.create_repo("bench/rss")
            stop, peak = threading.Event(), []
            sampler = threading.Thread(target=sample_peak, args=(hub.pid, stop, peak), daemon=True)
            sampler.start()
            started = time.monotonic()
            api.upload_file(path_or_fileobj=data, path_in_repo=data.name, repo_id="bench/rss")
            uploaded = time.monotonic()
            hf_hub_download(
                "bench/rss", data.name, endpoint=hub.url, token="hf_bench", cache_dir=root / "cache"
            )
            downloaded = time.monotonic()
            stop.set()
            sampler.join()
    result = {
        "size_mb": args.size_mb,
        "peak_rss_mb": round(peak[0] / MB, 1),
        "limit_mb": args.limit_mb,
        "upload_s": round(uploaded - started, 2),
        "download_s": round(downloaded - uploaded, 2),
    }
    print(json.dumps(result))
    return 0 if peak[0] < args.limit_mb * MB else 1


if __name__ == "__main__":
    sys.exit(main())
