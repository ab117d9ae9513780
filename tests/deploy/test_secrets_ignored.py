"""The Hub token file must never be committed: git ignores everything in secrets/ but its README."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy import deployfiles as df


def ignored(path: str) -> bool:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed; cannot check .gitignore")
    # --no-index: judge by the ignore rules alone, whether or not the file is tracked.
    result = subprocess.run([git, "check-ignore", "-q", "--no-index", path], cwd=df.ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode not in (0, 1):
        pytest.fail(f"git check-ignore failed: {result.stderr.strip()}")
    return result.returncode == 0


@pytest.mark.parametrize("path", ["secrets/hf_token", "secrets/wandb_api_key", ".env"])
def test_secret_files_are_git_ignored(path: str) -> None:
    assert ignored(path), (
        f"{path} is not git-ignored; add to .gitignore:\n/secrets/*\n!/secrets/README.md")


def test_secrets_readme_is_not_ignored() -> None:
    assert not ignored("secrets/README.md"), "secrets/README.md must stay committable"
