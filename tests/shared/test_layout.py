import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.layout import (
    FINAL_DIRNAME,
    Kind,
    checkpoint_name,
    classify,
    list_folders,
    marker_path,
    parse_checkpoint_name,
)


@pytest.mark.parametrize(
    "name, step",
    [("checkpoint-0", 0), ("checkpoint-50", 50), ("checkpoint-450", 450)],
)
def test_checkpoint_names_parse(name, step):
    assert parse_checkpoint_name(name) == step


@pytest.mark.parametrize(
    "name",
    ["checkpoint-../x", "checkpoint-abc", "checkpoint-5 (copy)", "checkpoint--1", "checkpoint-",
     "checkpoint-007", "checkpoint-5/", "xcheckpoint-5", "checkpoint-5.tmp", "Checkpoint-5",
     "checkpoint-５"],
)
def test_other_names_are_not_checkpoints(name):
    assert parse_checkpoint_name(name) is None
    assert classify(name) is None


@given(st.integers(min_value=0, max_value=10**12))
def test_checkpoint_name_round_trip(step):
    assert parse_checkpoint_name(checkpoint_name(step)) == step


def test_list_folders_keeps_only_uploadable_real_dirs(tmp_path):
    for name in ["checkpoint-100", "checkpoint-50", "checkpoint-abc", FINAL_DIRNAME, "logs"]:
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-7").write_text("a file, not a folder")
    os.symlink(tmp_path / "checkpoint-50", tmp_path / "checkpoint-60")
    refs = list_folders(tmp_path)
    assert [(r.kind, r.name) for r in refs] == [
        (Kind.CHECKPOINT, "checkpoint-50"),
        (Kind.CHECKPOINT, "checkpoint-100"),
        (Kind.FINAL, FINAL_DIRNAME),
    ]


def test_markers_never_match_rotation_glob(tmp_path):
    path = marker_path(tmp_path, "checkpoint-50")
    path.parent.mkdir()
    path.write_text("{}")
    # Trainer's rotation globs checkpoint-* directly in output_dir.
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == []
    assert path.parent.parent == tmp_path
    assert not path.parent.name.startswith("checkpoint-")
