"""Checkpoint folders shaped like Trainer's, for tests and benchmarks that need no torch.

Files come in Trainer's real write order; `marker=True` then writes the completion marker the
way the trainer's callback does. Contents are random but seeded, so two calls with the same
arguments make identical bytes (and different steps different bytes).
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from shared.layout import FINAL_DIRNAME, checkpoint_name
from shared.markers import build_marker, write_marker

PEFT_README = "---\nbase_model: /models/tiny\nlibrary_name: peft\n---\n# Model Card\n"


def safetensors_bytes(payload: int, rng: random.Random) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [payload // 4],
                               "data_offsets": [0, payload // 4 * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + rng.randbytes(payload // 4 * 4)


def checkpoint_files(step: int, *, adapter_bytes: int, optimizer_bytes: int,
                     eval_loss: float | None, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = random.Random(f"{seed}-{step}")
    log_history = [{"loss": 2.0, "step": step}]
    if eval_loss is not None:
        log_history.append({"eval_loss": eval_loss, "step": step})
    state = {"global_step": step, "epoch": step / 150, "max_steps": 450,
             "log_history": log_history}
    return [
        ("README.md", PEFT_README.encode()),
        ("adapter_model.safetensors", safetensors_bytes(adapter_bytes, rng)),
        ("adapter_config.json", json.dumps({"peft_type": "LORA", "r": 8}).encode()),
        ("tokenizer.json", json.dumps({"version": "1.0", "step": step}).encode()),
        ("training_args.bin", rng.randbytes(512)),
        ("optimizer.pt", rng.randbytes(optimizer_bytes)),
        ("scheduler.pt", rng.randbytes(256)),
        ("rng_state.pth", rng.randbytes(128)),
        ("trainer_state.json", json.dumps(state).encode()),
    ]


def write_checkpoint(
    output_dir: Path,
    step: int,
    *,
    run_id: str | None = "00000000-0000-4000-8000-000000000000",
    marker: bool = True,
    adapter_bytes: int = 64 * 1024,
    optimizer_bytes: int = 128 * 1024,
    eval_loss: float | None = None,
    seed: int = 0,
    between_files: Callable[[], None] | None = None,
    final: bool = False,
    now: datetime | None = None,
) -> Path:
    name = FINAL_DIRNAME if final else checkpoint_name(step)
    folder = Path(output_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    files = checkpoint_files(step, adapter_bytes=adapter_bytes, optimizer_bytes=optimizer_bytes,
                             eval_loss=eval_loss if eval_loss is not None else 3.0 - step / 500,
                             seed=seed)
    if final:
        files = [f for f in files if f[0] in ("README.md", "adapter_model.safetensors",
                                              "adapter_config.json", "tokenizer.json")]
        files.append(("eval_results.json", json.dumps({"f1": 0.5, "global_step": step}).encode()))
    for rel, data in files:
        (folder / rel).write_bytes(data)
        if between_files is not None:
            between_files()
    if marker:
        write_marker(output_dir, build_marker(output_dir, name, run_id=run_id or "", step=step,
                                              now=now or datetime.now(UTC)))
    return folder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under a folder by relative path (for byte-identity checks)."""
    out: dict[str, bytes] = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            path = Path(root) / f
            out[path.relative_to(folder).as_posix()] = path.read_bytes()
    return out
