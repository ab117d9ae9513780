"""Run info: written at start, and at exit with the outcome - failed when training raises or
SIGTERM arrives, so the uploader's --exit-when-done never waits for a run that is gone."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from transformers import TrainerCallback

from shared.run_info import Outcome, read_run_info
from trainer.__main__ import main
from trainer.settings import TrainerSettings
from trainer.train import Terminated, run


class Explode(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise RuntimeError("CUDA out of memory (simulated)")


class SendSigterm(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)


def test_failed_when_training_raises(small_settings: Callable[..., TrainerSettings]) -> None:
    settings = small_settings()
    with pytest.raises(RuntimeError, match="simulated"):
        run(settings, callbacks=[Explode()])
    info = read_run_info(settings.output_dir)
    assert info is not None and info.outcome is Outcome.FAILED and info.ended_at is not None
    assert not (settings.output_dir / "final").exists()


def test_failed_on_sigterm_and_handler_restored(
    small_settings: Callable[..., TrainerSettings],
) -> None:
    settings = small_settings()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        run(settings, callbacks=[SendSigterm()])
    assert signal.getsignal(signal.SIGTERM) is before
    info = read_run_info(settings.output_dir)
    assert info is not None and info.outcome is Outcome.FAILED


def test_stop_after_step_keeps_the_run_id_for_resume(
    small_settings: Callable[..., TrainerSettings], capsys: pytest.CaptureFixture[str],
) -> None:
    settings = small_settings(stop_after_step=4)
    args = ["--base-model", settings.base_model, "--output-dir", str(settings.output_dir),
            "--max-steps", "6", "--save-steps", "2", "--eval-steps", "2",
            "--max-train-samples", "64", "--max-eval-samples", "8",
            "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1",
            "--f1-max-samples", "2", "--f1-max-new-tokens", "4"]
    assert main([*args, "--stop-after-step", "4"]) == 3
    first = read_run_info(settings.output_dir)
    assert first is not None and first.outcome is Outcome.FAILED
    assert not (settings.output_dir / "final").exists()
    assert "--resume latest" in capsys.readouterr().out

    assert main([*args, "--resume", "latest"]) == 0
    second = read_run_info(settings.output_dir)
    assert second is not None and second.outcome is Outcome.COMPLETED
    assert second.run_id == first.run_id and second.wandb_run_id == first.wandb_run_id
    assert (settings.output_dir / "final" / "eval_results.json").is_file()


def test_resume_without_run_info_is_one_error(
    small_settings: Callable[..., TrainerSettings], capsys: pytest.CaptureFixture[str],
) -> None:
    settings = small_settings()
    assert main(["--output-dir", str(settings.output_dir), "--resume", "latest"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Error: --resume latest needs this run's id")
    assert err[1].startswith("Try: ")
