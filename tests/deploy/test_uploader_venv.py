"""The uploader image's install, replayed in a fresh venv: it must work without torch.

No Docker engine is needed: the test copies what Dockerfile.uploader COPYs into a temporary
build dir and runs the Dockerfile's own `pip install` lines there, in order, with a fresh venv's
pip first on PATH. Everything (venv, build dir, pip's temp files) stays under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import deployfiles as df

HEAVY = {"torch", "transformers", "peft", "accelerate"}


def _run(args: list[str] | str, cwd: Path, env: dict[str, str],
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, shell=isinstance(args, str), check=False)


def _copy(source: str, dest: str, build: Path) -> None:
    # The Dockerfile copies each path to the same relative place under its WORKDIR; keep that
    # true, so that this replay matches the image.
    assert dest in ("./", ".") or dest.rstrip("/") == source.rstrip("/"), (source, dest)
    origin = df.ROOT / source
    target = build / source
    if origin.is_dir():
        shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(origin, build / origin.name)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_uploader_extra_installs_and_runs_without_torch(tmp_path: Path) -> None:
    venv, build, temp = tmp_path / "venv", tmp_path / "build", tmp_path / "tmp"
    build.mkdir()
    temp.mkdir()
    created = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                             text=True, timeout=300, check=False)
    assert created.returncode == 0, created.stderr
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               TMPDIR=str(temp), PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONDONTWRITEBYTECODE="1")

    installs = 0
    for inst in df.dockerfile(df.DOCKERFILES["uploader"]):
        if inst.keyword == "COPY":
            for source, dest in df.copy_sources([inst]):
                _copy(source, dest, build)
        elif inst.keyword == "RUN" and inst.args.startswith("pip install"):
            result = _run(inst.args, build, env)
            assert result.returncode == 0, f"`{inst.args}` failed:\n{result.stdout}{result.stderr}"
            installs += 1
    assert installs, "Dockerfile.uploader has no `RUN pip install` line to replay"

    python = str(venv / "bin" / "python")
    # From tmp_path, not the build dir: `python -m` puts the working directory on sys.path, and
    # the copied sources there would hide a broken install.
    torch = _run([python, "-c", "import torch"], tmp_path, env)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr, torch.stderr
    for command in ([python, "-m", "uploader", "--help"], [str(venv / "bin" / "ckpt-uploader"),
                    "watch", "--help"], [python, "-m", "uploader.cli.docs"]):
        result = _run(command, tmp_path, env, timeout=120)
        assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    listed = _run([python, "-m", "pip", "list", "--format=json"], tmp_path, env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    names = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert "checkpoint-sidecar" in names
    assert not names & HEAVY, f"the uploader extra pulled {sorted(names & HEAVY)}"
