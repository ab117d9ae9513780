"""The `hf` CLI against devhub: upload a folder, download it back."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub

from .conftest import storage_calls, write_files

HF = Path(sys.executable).parent / "hf"


def run_hf(
    hub: DevHub, tmp_path: Path, transfer: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **hub.env("alice", transfer=transfer),
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    return subprocess.run(
        [str(HF), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(not HF.exists(), reason="hf CLI not installed in this environment")
def test_hf_upload_then_download(
    hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path, transfer: str
) -> None:
    """`hub.env()` gives the CLI Xet by default, as against the Hub; `transfer="lfs"` plain LFS."""
    files = {
        "config.json": b'{"a": 1}',
        "weights.safetensors": os.urandom(300_000),
        "sub/notes.md": b"# notes\n",
    }
    folder = write_files(tmp_path / "src", files)
    started = time.time()
    uploaded = run_hf(
        hub,
        tmp_path,
        transfer,
        "upload",
        repo_id,
        str(folder),
        ".",
        "--private",
        "--commit-message",
        "from cli",
    )
    assert uploaded.returncode == 0, uploaded.stderr
    calls = [e for e in hub.log() if e["time"] >= started]  # the log keeps recent ones
    lfs_batches = [e for e in calls if e["path"].endswith("/info/lfs/objects/batch")]
    if transfer == "xet":
        assert storage_calls(calls) and not lfs_batches
    else:
        assert lfs_batches and not storage_calls(calls)
    assert alice.model_info(repo_id).private is True
    assert alice.list_repo_commits(repo_id)[0].title == "from cli"

    out = tmp_path / "out"
    downloaded = run_hf(hub, tmp_path, transfer, "download", repo_id, "--local-dir", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    for rel, content in files.items():
        assert (out / rel).read_bytes() == content
