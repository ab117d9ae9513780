"""Acceptance: the seed's exact numbers on CPU with the tiny model, through the CLI, and an
adapter that learns.

2,400 samples, batch 4 x gradient accumulation 4, 3 epochs: 450 steps, a checkpoint and an
eval_loss every 50 steps (9 checkpoints), then the final adapter with eval_results.json - each
folder with its completion marker - in under 3 minutes. One run (a module fixture) backs every
test here, including the learning targets: eval_loss halves from step 50 to 450, the best
checkpoint is not the first, entity F1 >= 0.5 and most answers parse.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.layout import list_folders
from shared.markers import read_marker
from shared.run_info import Outcome, read_run_info
from trainer.__main__ import main

pytestmark = pytest.mark.slow

TIME_LIMIT_S = 180
TOKEN = "hf_full_run_secret_token"
STEPS = list(range(50, 451, 50))
# The learning targets.
MAX_LOSS_RATIO = 0.5  # eval_loss at step 450 / eval_loss at step 50
MIN_F1 = 0.5
MAX_MALFORMED_FRACTION = 0.5


@dataclass(frozen=True)
class FullRun:
    code: int
    out: Path
    elapsed: float
    stdout: str
    stderr: str

    def eval_losses(self) -> dict[int, float]:
        state = json.loads((self.out / "checkpoint-450" / "trainer_state.json").read_text())
        return {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e}

    def results(self) -> dict:
        return json.loads((self.out / "final" / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    out = tmp_path_factory.mktemp("full") / "llama3-medical-ner-lora"
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        patch.setenv("HF_TOKEN", TOKEN)  # must never reach training_args.bin
        started = time.monotonic()
        code = main(["--base-model", "tiny", "--output-dir", str(out)])
        elapsed = time.monotonic() - started
    print(f"full tiny run: {elapsed:.1f}s")
    return FullRun(code, out, elapsed, stdout.getvalue(), stderr.getvalue())


def test_full_tiny_run_with_the_seed_numbers(full_run: FullRun) -> None:
    out = full_run.out
    assert full_run.code == 0, full_run.stderr[-3000:]
    assert full_run.elapsed < TIME_LIMIT_S

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
    assert list(full_run.eval_losses()) == STEPS
    assert state["max_steps"] == 450 and state["train_batch_size"] == 4

    final = out / "final"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                 "tokenizer_config.json", "eval_results.json"):
        assert (final / name).is_file(), name
    final_marker = read_marker(out, "final")
    assert final_marker is not None and final_marker.step == 450 and final_marker.matches(final)
    assert "eval_results.json" in {f.path for f in final_marker.files}  # marker came after it
    results = full_run.results()
    assert results["samples"] == 300 and results["step"] == 450
    assert 0 <= results["f1"] <= 1 and results["gold"] > 0
    assert "entity F1" in full_run.stdout


def test_eval_loss_halves_from_the_first_checkpoint_to_the_last(full_run: FullRun) -> None:
    losses = full_run.eval_losses()
    assert losses[450] <= MAX_LOSS_RATIO * losses[50], losses


def test_the_best_checkpoint_is_not_the_first(full_run: FullRun) -> None:
    losses = full_run.eval_losses()
    assert min(losses, key=losses.__getitem__) != 50, losses


def test_the_adapter_extracts_entities(full_run: FullRun) -> None:
    results = full_run.results()
    assert results["f1"] >= MIN_F1, results
    assert results["malformed"] <= MAX_MALFORMED_FRACTION * results["samples"], results
