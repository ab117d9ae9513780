"""Acceptance: the seed's exact numbers on CPU with the tiny model, through the CLI.

2,400 samples, batch 4 x gradient accumulation 4, 3 epochs: 450 steps, a checkpoint and an
eval_loss every 50 steps (9 checkpoints), then the final adapter with eval_results.json - each
folder with its completion marker - in under 3 minutes. One run, all assertions on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shared.layout import list_folders
from shared.markers import read_marker
from shared.run_info import Outcome, read_run_info
from trainer.__main__ import main

TIME_LIMIT_S = 180
TOKEN = "hf_full_run_secret_token"
STEPS = list(range(50, 451, 50))


@pytest.mark.slow
def test_full_tiny_run_with_the_seed_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # must never reach training_args.bin
    out = tmp_path / "llama3-medical-ner-lora"
    started = time.monotonic()
    code = main(["--base-model", "tiny", "--output-dir", str(out), "--max-seq-length", "160",
                 "--f1-max-new-tokens", "64"])
    elapsed = time.monotonic() - started
    print(f"full tiny run: {elapsed:.1f}s")
    assert code == 0, capsys.readouterr().err[-3000:]
    assert elapsed < TIME_LIMIT_S

    info = read_run_info(out)
    assert info is not None and info.outcome is Outcome.COMPLETED and info.base_model == "tiny"
    assert [ref.name for ref in list_folders(out)] == [f"checkpoint-{s}" for s in STEPS] + [
        "final"]
    for step in STEPS:
        folder = out / f"checkpoint-{step}"
        marker = read_marker(out, folder.name)
        assert marker is not None and marker.step == step and marker.run_id == info.run_id
        assert marker.matches(folder)
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == step
        assert TOKEN.encode() not in (folder / "training_args.bin").read_bytes()

    state = json.loads((out / "checkpoint-450" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_loss" in e] == STEPS
    assert state["max_steps"] == 450 and state["train_batch_size"] == 4

    final = out / "final"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                 "tokenizer_config.json", "eval_results.json"):
        assert (final / name).is_file(), name
    final_marker = read_marker(out, "final")
    assert final_marker is not None and final_marker.step == 450 and final_marker.matches(final)
    assert "eval_results.json" in {f.path for f in final_marker.files}  # marker came after it
    results = json.loads((final / "eval_results.json").read_text())
    assert results["samples"] == 300 and results["step"] == 450
    assert 0 <= results["f1"] <= 1 and results["gold"] > 0
    assert "entity F1" in capsys.readouterr().out
