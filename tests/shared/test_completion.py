"""`shared.completion`: the rules of a finished Trainer save, shared by the uploader's settle road
(tests/uploader/test_detect.py) and the trainer's resume from an unmarked checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.completion import Unfinished, finished_save
from shared.layout import FolderRef, Kind
from tests.support.checkpoints import write_checkpoint

REF = FolderRef(Kind.CHECKPOINT, "checkpoint-10", 10)


def test_a_finished_save_gives_its_step(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 10, marker=False)
    assert finished_save(folder, REF) == 10
    final = write_checkpoint(tmp_path, 20, marker=False, final=True)
    assert finished_save(final, FolderRef(Kind.FINAL, "final", None)) == 20


@pytest.mark.parametrize(
    ("damage", "reason", "final"),
    [
        (lambda f: (f / "trainer_state.json").unlink(), "waiting for trainer_state.json", False),
        (lambda f: (f / "trainer_state.json").write_text('{"global_'), "does not parse", False),
        (lambda f: (f / "trainer_state.json").write_text('{"global_step": 9}'),
         "says global_step 9", True),
        (lambda f: (f / "adapter_model.safetensors").write_bytes(b"\1"), "safetensors", False),
        (lambda f: (f / "adapter_config.json").unlink(), "adapter_config.json missing", False),
        (lambda f: (f / "optimizer.pt.tmp").write_bytes(b""), "temporary file", False),
    ],
    ids=["no-state", "truncated-state", "wrong-step", "bad-header", "no-config", "tmp-file"],
)
def test_an_unfinished_save_says_why(tmp_path: Path, damage, reason: str, final: bool) -> None:
    folder = write_checkpoint(tmp_path, 10, marker=False)
    damage(folder)
    with pytest.raises(Unfinished, match=reason) as info:
        finished_save(folder, REF)
    assert info.value.final is final


def test_gone_or_a_symlink_is_not_a_finished_save(tmp_path: Path) -> None:
    with pytest.raises(Unfinished):
        finished_save(tmp_path / "checkpoint-10", REF)
    real = write_checkpoint(tmp_path / "elsewhere", 10, marker=False)
    (tmp_path / "checkpoint-10").symlink_to(real)
    with pytest.raises(Unfinished, match="symlink"):
        finished_save(tmp_path / "checkpoint-10", REF)
    assert json.loads((real / "trainer_state.json").read_text())["global_step"] == 10
