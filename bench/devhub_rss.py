"""Peak RSS of devhub while it receives and serves one large file (default 2 GB), over LFS and Xet.

    python bench/devhub_rss.py --size-mb 2048 [--transfer lfs|xet|both] [--chunk-mb 64]
                               [--limit-mb 200]

Prints one JSON line per transfer and exits 1 when a peak is over the limit. For Xet the file
is uploaded through hf_xet, downloaded through hf_xet, then downloaded over plain HTTP (Xet off:
devhub rebuilds it from the xorbs). The tests check the same with a few hundred MB
(tests/devhub/test_rss.py); this is the full-size run.
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
from huggingface_hub import HfApi, constants, hf_hub_download

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devhub.testing import DevHub

MB = 1024 * 1024


def write_file(path: Path, size_mb: int) -> None:
    """Random 1 MB blocks, written one at a time (the bench itself stays small). Random, so
    Xet's deduplication and compression cannot shrink what devhub receives."""
    with open(path, "wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(MB))


def sample_peak(pid: int, stop: threading.Event, out: list[int]) -> None:
    process = psutil.Process(pid)
    out.append(process.memory_info().rss)
    while not stop.wait(0.05):
        out[0] = max(out[0], process.memory_info().rss)


def run(root: Path, data: Path, transfer: str, chunk_mb: int) -> dict[str, float]:
    """Upload then download `data` with one transfer; peak RSS of devhub and the timings."""
    constants.HF_HUB_DISABLE_XET = transfer == "lfs"  # read at call time
    with DevHub(
        root / f"hub-{transfer}",
        users={"bench": "hf_bench"},
        multipart_chunk_size=chunk_mb * MB,
        xet=transfer == "xet",
    ) as hub:
        api = HfApi(endpoint=hub.url, token="hf_bench")
        api.create_repo("bench/rss")
        stop, peak = threading.Event(), []
        sampler = threading.Thread(target=sample_peak, args=(hub.pid, stop, peak), daemon=True)
        sampler.start()
        times = {"start": time.monotonic()}
        api.upload_file(path_or_fileobj=data, path_in_repo=data.name, repo_id="bench/rss")
        times["upload_s"] = time.monotonic()
        caches = [root / f"cache-{transfer}"]
        if transfer == "xet":
            caches.append(root / "cache-xet-over-http")
        for n, cache in enumerate(caches):
            if n == 1:
                constants.HF_HUB_DISABLE_XET = True  # the same Xet file, rebuilt by devhub
            got = hf_hub_download(
                "bench/rss", data.name, endpoint=hub.url, token="hf_bench", cache_dir=cache
            )
            if os.path.getsize(got) != data.stat().st_size:
                raise SystemExit(f"{transfer}: downloaded {os.path.getsize(got)} bytes")
            os.unlink(got)  # keep the disk use of a 2 GB run bounded
            times["download_s" if n == 0 else "http_download_s"] = time.monotonic()
        stop.set()
        sampler.join()
    out: dict[str, float] = {"peak_rss_mb": round(peak[0] / MB, 1)}
    last = times.pop("start")
    for name, at in times.items():
        out[name] = round(at - last, 2)
        last = at
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--transfer", choices=("lfs", "xet", "both"), default="both")
    parser.add_argument("--chunk-mb", type=int, default=64, help="devhub multipart chunk size")
    parser.add_argument("--limit-mb", type=int, default=200)
    args = parser.parse_args()
    transfers = ("lfs", "xet") if args.transfer == "both" else (args.transfer,)
    ok = True
    with tempfile.TemporaryDirectory(prefix="devhub-rss-") as tmp:
        root = Path(tmp)
        data = root / "weights.safetensors"
        write_file(data, args.size_mb)
        for transfer in transfers:
            result = run(root, data, transfer, args.chunk_mb)
            ok = ok and result["peak_rss_mb"] < args.limit_mb
            line = {"transfer": transfer, "size_mb": args.size_mb, "limit_mb": args.limit_mb}
            print(json.dumps({**line, **result}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
