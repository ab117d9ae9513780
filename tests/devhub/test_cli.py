"""The `hf` CLI against devhub: upload a folder, download it back."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub

from .conftest import write_files

HF = Path(sys.executable).parent / "hf"


def run_hf(hub: DevHub, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **hub.env("alice"), "HF_HOME": str(tmp_path / "hf-home")}
    return subprocess.run(
        [str(HF), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(not HF.exists(), reason="hf CLI not installed in this environment")
def test_hf_upload_then_download(hub: DevHub, alice: HfApi, repo_id: str, tmp_path: Path) -> None:
    files = {
        "config.json": b'{"a": 1}',
        "weights.safetensors": os.urandom(300_000),
        "sub/notes.md": b"# notes\n",
    }
    folder = write_files(tmp_path / "src", files)
    uploaded = run_hf(
        hub,
        tmp_path,
        "upload",
        repo_id,
        str(folder),
        ".",
        "--private",
        "--commit-message",
        "from cli",
    )
    assert uploaded.returncode == 0, uploaded.stderr
    assert alice.model_info(repo_id).private is True
    assert alice.list_repo_commits(repo_id)[0].title == "from cli"

    out = tmp_path / "out"
    downloaded = run_hf(hub, tmp_path, "download", repo_id, "--local-dir", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    for rel, content in files.items():
        assert (out / rel).read_bytes() == content
