"""Which W&B run the uploader writes into, and where, with W&B's own variables as a user sets them.

Online with the training run's W&B id known (run info or `WANDB_RUN_ID`): that very run, in
W&B's shared mode as a secondary writer, none of the training run's name, group or config
touched. Offline: a separate `upload` run, and a log line that says so. `WANDB_DIR` and
`WANDB_ENTITY` mean what W&B says. A recording stand-in for `wandb` shows the calls (online W&B
cannot be reached from a test); the offline road is covered with real wandb in test_tracking.py.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from shared.run_info import start_run
from tests.uploader.test_tracking import DEADLINE, MemoryMeta, make_record, make_result
from uploader.settings import UploaderSettings
from uploader.tracking import Mode, TrackingConfig, WandbTracker, tracking_config

TRAIN_WANDB_ID = "trainrun0001"


class FakeRun:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.id = kwargs["id"]
        self.project, self.group = kwargs.get("project"), kwargs.get("group")
        self.settings = types.SimpleNamespace(sync_dir=str(Path(kwargs["dir"]) / "wandb" / "x"))
        self.summary: dict[str, Any] = {}
        self.logged: list[dict[str, Any]] = []
        self.artifacts: list[Any] = []

    def log(self, row: dict[str, Any]) -> None:
        self.logged.append(row)

    def define_metric(self, *a: Any, **kw: Any) -> None:
        pass

    def log_artifact(self, artifact: Any, aliases: list[str]) -> None:
        self.artifacts.append(artifact)

    def finish(self, exit_code: int = 0) -> None:
        pass


class FakeArtifact:
    def __init__(self, name: str, **kw: Any) -> None:
        self.name, self.references = name, []

    def add_reference(self, url: str, name: str, checksum: bool) -> None:
        self.references.append(url)


class FakeTable:
    def __init__(self, columns: list[str], data: list[list[Any]], log_mode: str) -> None:
        self.data, self.log_mode = list(data), log_mode

    def add_data(self, *row: Any) -> None:
        self.data.append(list(row))


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    module = types.SimpleNamespace(runs=[], Artifact=FakeArtifact, Table=FakeTable)
    module.Settings = lambda **kw: dict(kw)

    def init(**kwargs: Any) -> FakeRun:
        run = FakeRun(kwargs)
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def config(tmp_path: Path, mode: Mode, **kw: Any) -> TrackingConfig:
    return TrackingConfig(mode=mode, state_dir=tmp_path / "state", output_dir=tmp_path / "out",
                          wait_for_run_info=0.0, system_metrics=False, **kw)


def run_one(cfg: TrackingConfig) -> WandbTracker:
    tracker = WandbTracker(cfg, MemoryMeta())
    tracker.verified(make_result(make_record(50, eval_loss=0.5)))
    assert tracker.close(DEADLINE)
    assert tracker.errors == 0
    return tracker


def test_online_with_the_training_run_known_writes_into_it_shared(
        tmp_path: Path, fake_wandb: types.SimpleNamespace) -> None:
    start_run(tmp_path / "out", base_model="tiny", resume=False, wandb_project="proj",
              wandb_run_id=TRAIN_WANDB_ID)
    tracker = run_one(config(tmp_path, Mode.ONLINE, entity="lab"))
    (run,) = fake_wandb.runs
    assert tracker.shared and run.id == TRAIN_WANDB_ID
    settings = run.kwargs["settings"]
    assert (settings["mode"], settings["x_primary"], settings["x_label"]) == (
        "shared", False, "uploader")
    assert run.kwargs["project"] == "proj" and run.kwargs["entity"] == "lab"
    # A secondary writer must not rename, regroup or reconfigure the training run.
    assert not {"name", "group", "job_type", "config"} & set(run.kwargs)
    (row,) = run.logged
    assert row["checkpoint_step"] == 50 and row["checkpoint_url"].endswith("-checkpoint-50")
    (artifact,) = run.artifacts
    assert artifact.references == [f"{row['checkpoint_url']}/tree/{50:040x}"]


def test_wandb_run_id_from_the_environment_names_the_training_run(
        tmp_path: Path, fake_wandb: types.SimpleNamespace) -> None:
    run_one(config(tmp_path, Mode.ONLINE, train_run_id="fromenv0001"))
    assert fake_wandb.runs[0].id == "fromenv0001"


def test_offline_falls_back_to_a_separate_upload_run_and_says_so(
        tmp_path: Path, fake_wandb: types.SimpleNamespace,
        caplog: pytest.LogCaptureFixture) -> None:
    start_run(tmp_path / "out", base_model="tiny", resume=False, wandb_run_id=TRAIN_WANDB_ID)
    with caplog.at_level(logging.INFO, logger="uploader.tracking"):
        tracker = run_one(config(tmp_path, Mode.OFFLINE))
    (run,) = fake_wandb.runs
    assert not tracker.shared and run.id != TRAIN_WANDB_ID
    assert run.kwargs["job_type"] == "upload" and run.kwargs["mode"] == "offline"
    assert any("separate upload run" in r.getMessage() and "offline" in str(r.__dict__)
               for r in caplog.records)


def test_wandb_dir_entity_and_run_id_are_read_as_wandb_defines_them(tmp_path: Path) -> None:
    settings = UploaderSettings(output_dir=tmp_path / "out")
    environ = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"),
               "WANDB_ENTITY": "lab", "WANDB_RUN_ID": "abc123", "WANDB_PROJECT": "p"}
    cfg = tracking_config(environ, settings)
    assert cfg.runs_dir == tmp_path / "wb" / "wandb"
    assert (cfg.entity, cfg.train_run_id, cfg.project) == ("lab", "abc123", "p")
    assert tracking_config({"WANDB_MODE": "offline"}, settings).runs_dir == (
        settings.resolved_state_dir / "wandb")
