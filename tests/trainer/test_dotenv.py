"""The trainer reads `.env` as the uploader does: a variable the process already has wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_trainer(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "HF_TOKEN"))}
    base["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, env=base | env,
                          capture_output=True, text=True, timeout=300)


def test_a_setting_in_dotenv_reaches_the_trainer(tmp_path: Path) -> None:
    # An invalid value proves the file was read: without it this would train for one step.
    (tmp_path / ".env").write_text("TRAINER_LORA_R=not-a-number\n")
    result = run_trainer(tmp_path, "--base-model", "tiny", "--max-steps", "1",
                         "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "LORA_R" in result.stderr.upper() and "Traceback" not in result.stderr


def test_the_process_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TRAINER_LORA_R=not-a-number\nTRAINER_LOAD_IN_4BIT=true\n")
    # The settings parse (the process's LORA_R wins), so the run gets as far as its pre-flight
    # check, which refuses 4-bit loading on a machine without CUDA: .env's other line counted.
    result = run_trainer(tmp_path, "--base-model", "tiny", "--output-dir", str(tmp_path / "out"),
                         TRAINER_LORA_R="8")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "4" in result.stderr and "LORA_R" not in result.stderr.upper()
