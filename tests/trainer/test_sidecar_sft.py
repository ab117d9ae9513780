"""`trainer.sidecar.SidecarCallback` in a user's own TRL SFTTrainer script, run as the user would:
`python script.py` and `accelerate launch` with 2 CPU processes (gloo).

Each save gets exactly one marker, written by world rank 0 after every rank finished the save
(the marker lists rank 1's `rng_state_1.pth`), and the run info records start and outcome.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.layout import markers_dir
from shared.markers import read_marker
from shared.run_info import Outcome, read_run_info

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("sft_user_script.py")
ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_TOKEN"))}
    return env | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                  "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=user_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]


def probes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_run(out: Path, probe: Path, ranks: int) -> None:
    info = read_run_info(out)
    assert info is not None and info.outcome is Outcome.COMPLETED and info.ended_at
    assert info.wandb_run_id is None  # no W&B run here: none is invented for the uploader
    assert sorted(p.name for p in markers_dir(out).iterdir()) == [
        "checkpoint-2.json", "checkpoint-4.json"]
    for step in (2, 4):
        marker = read_marker(out, f"checkpoint-{step}")
        assert marker is not None and marker.step == step and marker.run_id == info.run_id
        assert marker.matches(out / f"checkpoint-{step}")
    seen = probes(probe)
    assert sorted((p["rank"], p["step"]) for p in seen) == sorted(
        (rank, step) for rank in range(ranks) for step in (2, 4))
    for p in seen:
        if p["rank"] == 0:  # right after the save, the marker is already there and complete
            assert p["marker"] and p["matches"]
            expected = {f"rng_state_{r}.pth" for r in range(ranks)} if ranks > 1 else {
                "rng_state.pth"}
            assert expected <= set(p["files"]), p["files"]


def test_sft_trainer_script_gets_markers_and_run_info(tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    out, probe = tmp_path / "out", tmp_path / "probe.jsonl"
    run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(out), str(probe)])
    check_run(out, probe, ranks=1)


def test_accelerate_launch_two_cpu_processes_one_marker_per_save_from_rank_0(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    out, probe = tmp_path / "out", tmp_path / "probe.jsonl"
    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu is accelerate's multi-process launcher (torchrun); on a machine without a
    # GPU the script's use_cpu=True makes each process join a gloo group on CPU.
    run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()),
         str(SCRIPT), str(tiny_model_dir), str(out), str(probe)])
    check_run(out, probe, ranks=2)


def test_the_module_pulls_in_none_of_the_demo_trainer() -> None:
    code = ("import sys, trainer.sidecar\n"
            "print(sorted(m for m in sys.modules if m.startswith('trainer.')))")
    done = subprocess.run([sys.executable, "-c", code], env=user_env(), capture_output=True,
                          text=True, check=True, timeout=RUN_TIMEOUT)
    assert done.stdout.strip() == "['trainer.callbacks', 'trainer.sidecar']"
