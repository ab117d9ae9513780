"""The completion-marker callback: a marker after each save, only on world rank 0 after the
barrier, and orphan markers dropped once rotation (save_total_limit) deletes their folders."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from shared.layout import list_folders, markers_dir
from shared.markers import read_marker
from shared.run_info import read_run_info
from trainer.callbacks import CompletionMarkerCallback
from trainer.settings import TrainerSettings
from trainer.train import run


class MarkerAtSave(TrainerCallback):
    """Runs after the marker callback and records what the marker said at each save."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.seen: list[tuple[int, bool, list[str]]] = []

    def on_save(self, args, state, control, **kwargs) -> None:
        name = f"checkpoint-{state.global_step}"
        marker = read_marker(self.output_dir, name)
        assert marker is not None, f"no marker for {name} right after its save"
        self.seen.append((marker.step, marker.matches(self.output_dir / name),
                          sorted(f.path for f in marker.files)))


def test_marker_after_each_save_and_orphans_removed(
    small_settings: Callable[..., TrainerSettings],
) -> None:
    settings = small_settings(save_total_limit=2)
    out = settings.output_dir
    probe = MarkerAtSave(out)
    result = run(settings, callbacks=[probe])
    info = read_run_info(out)
    assert info is not None and result.run_id == info.run_id

    assert [step for step, _, _ in probe.seen] == [2, 4, 6]
    assert all(matches for _, matches, _ in probe.seen)
    files = probe.seen[-1][2]
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt",
                 "trainer_state.json", "training_args.bin"):
        assert name in files
    # Rotation kept two folders; the marker of the deleted one went with it.
    assert [r.name for r in list_folders(out)] == ["checkpoint-4", "checkpoint-6", "final"]
    assert sorted(p.name for p in markers_dir(out).iterdir()) == [
        "checkpoint-4.json", "checkpoint-6.json", "final.json"]
    for name in ("checkpoint-4", "checkpoint-6", "final"):
        marker = read_marker(out, name)
        assert marker is not None and marker.run_id == info.run_id
        assert marker.matches(out / name) and marker.origin_repo is None
    assert read_marker(out, "final").step == 6
    assert json.loads((out / "final" / "eval_results.json").read_text())["step"] == 6


def _state(step: int, world_zero: bool) -> TrainerState:
    state = TrainerState()
    state.global_step = step
    state.is_world_process_zero = world_zero
    return state


def test_only_world_rank_zero_writes_after_the_barrier(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    calls: list[str] = []

    def barrier() -> None:
        calls.append("barrier")
        assert read_marker(tmp_path, "checkpoint-5") is None  # nothing written before it

    callback = CompletionMarkerCallback(tmp_path, "run-1", barrier=barrier)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    callback.on_save(args, _state(5, world_zero=False), TrainerControl())
    assert calls == ["barrier"] and read_marker(tmp_path, "checkpoint-5") is None
    callback.on_save(args, _state(5, world_zero=True), TrainerControl())
    assert calls == ["barrier", "barrier"]
    marker = read_marker(tmp_path, "checkpoint-5")
    assert marker is not None and marker.run_id == "run-1" and marker.step == 5
