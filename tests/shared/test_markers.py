import json
import os
from datetime import UTC, datetime

import pytest

from shared.layout import Kind
from shared.markers import (
    MarkerError,
    build_marker,
    read_marker,
    remove_orphan_markers,
    write_marker,
)


def make_folder(root, name="checkpoint-50"):
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (folder / "trainer_state.json").write_text('{"global_step": 50}')
    (folder / "sub" / "shard.bin").write_bytes(b"y" * 10)
    return folder


def test_marker_round_trip_and_match(tmp_path):
    folder = make_folder(tmp_path)
    when = datetime(2026, 11, 4, 14, 30, 22, 123456, tzinfo=UTC)
    marker = build_marker(tmp_path, "checkpoint-50", run_id="r1", step=50, now=when)
    path = write_marker(tmp_path, marker)
    assert not path.is_relative_to(folder)
    loaded = read_marker(tmp_path, "checkpoint-50")
    assert loaded == marker
    assert loaded.kind is Kind.CHECKPOINT
    assert loaded.written_datetime == when
    assert {f.path for f in loaded.files} == {
        "adapter_model.safetensors", "trainer_state.json", "sub/shard.bin"}
    assert loaded.matches(folder)


@pytest.mark.parametrize("change", ["append", "touch", "add", "remove"])
def test_marker_goes_stale_when_folder_changes(tmp_path, change):
    folder = make_folder(tmp_path)
    marker = build_marker(tmp_path, "checkpoint-50", run_id="r1", step=50)
    target = folder / "trainer_state.json"
    if change == "append":
        with open(target, "a") as fh:
            fh.write(" ")
    elif change == "touch":
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif change == "add":
        (folder / "optimizer.pt").write_bytes(b"z")
    else:
        target.unlink()
    assert not marker.matches(folder)


def test_marker_written_atomically_outside_folder(tmp_path):
    make_folder(tmp_path)
    marker = build_marker(tmp_path, "checkpoint-50", run_id="r1", step=50)
    before = (tmp_path / "checkpoint-50").stat().st_mtime_ns
    write_marker(tmp_path, marker)
    assert (tmp_path / "checkpoint-50").stat().st_mtime_ns == before
    leftovers = [p.name for p in (tmp_path / ".complete").iterdir()]
    assert leftovers == ["checkpoint-50.json"]


def test_missing_marker_is_none_and_malformed_raises(tmp_path):
    make_folder(tmp_path)
    assert read_marker(tmp_path, "checkpoint-50") is None
    (tmp_path / ".complete").mkdir()
    (tmp_path / ".complete" / "checkpoint-50.json").write_text("{not json")
    with pytest.raises(MarkerError):
        read_marker(tmp_path, "checkpoint-50")
    (tmp_path / ".complete" / "checkpoint-50.json").write_text(json.dumps({"run_id": "r"}))
    with pytest.raises(MarkerError):
        read_marker(tmp_path, "checkpoint-50")


def test_marker_for_another_folder_is_refused(tmp_path):
    make_folder(tmp_path, "checkpoint-100")
    marker = build_marker(tmp_path, "checkpoint-100", run_id="r1", step=100)
    (tmp_path / ".complete").mkdir()
    (tmp_path / ".complete" / "checkpoint-50.json").write_text(json.dumps(marker.to_json()))
    with pytest.raises(MarkerError):
        read_marker(tmp_path, "checkpoint-50")


def test_step_must_match_folder(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(ValueError):
        build_marker(tmp_path, "checkpoint-50", run_id="r1", step=60)


def test_final_marker_and_origin_repo(tmp_path):
    make_folder(tmp_path, "final")
    marker = build_marker(tmp_path, "final", run_id="r1", step=450, origin_repo="u/x")
    write_marker(tmp_path, marker)
    loaded = read_marker(tmp_path, "final")
    assert loaded.kind is Kind.FINAL and loaded.step == 450 and loaded.origin_repo == "u/x"


def test_orphan_markers_removed(tmp_path):
    for name in ("checkpoint-50", "checkpoint-100"):
        make_folder(tmp_path, name)
        write_marker(tmp_path, build_marker(tmp_path, name, run_id="r", step=int(name[11:])))
    import shutil

    shutil.rmtree(tmp_path / "checkpoint-50")
    assert remove_orphan_markers(tmp_path) == ["checkpoint-50"]
    assert read_marker(tmp_path, "checkpoint-50") is None
    assert read_marker(tmp_path, "checkpoint-100") is not None
