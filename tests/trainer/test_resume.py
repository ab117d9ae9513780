"""Where a resumed run starts: local checkpoints with matching markers, else this run's newest
verified checkpoint repo (a Hub double here, for fault injection; devhub in test_resume_hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.layout import markers_dir
from shared.markers import build_marker, read_marker, write_marker
from trainer.errors import ResumeError
from trainer.hub_restore import RESTORE_TMP_PREFIX, restore_newest
from trainer.resume import HubAccess, latest_local, resolve_resume

from .hubtools import FolderHub, manifest_for

RUN = "11111111-2222-3333-4444-555555555555"
OTHER_RUN = "99999999-2222-3333-4444-555555555555"


def make_checkpoint(out: Path, step: int, run_id: str = RUN, marker: bool = True) -> Path:
    folder = out / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(64) + bytes([step % 256]))
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (folder / "sub" / "rng_state.pth").write_bytes(b"rng")
    if marker:
        write_marker(out, build_marker(out, folder.name, run_id=run_id, step=step))
    return folder


def access(token: str | None = "hf_token", namespace: str | None = None) -> HubAccess:
    return HubAccess(endpoint="http://hub.invalid", token=token, namespace=namespace,
                     prefix="llama3-medical-ner")


def test_latest_local_takes_the_newest_matching_marker_of_this_run(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 50)
    make_checkpoint(tmp_path, 100)
    make_checkpoint(tmp_path, 150, marker=False)  # maybe half-written
    make_checkpoint(tmp_path, 200, run_id=OTHER_RUN)  # an older run's folder
    assert latest_local(tmp_path, RUN).step == 100
    (tmp_path / "checkpoint-100" / "trainer_state.json").write_text("{}")  # rewritten since
    assert latest_local(tmp_path, RUN).step == 50
    assert latest_local(tmp_path, None).step == 200


def test_latest_with_nothing_is_one_error(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 50, marker=False)
    with pytest.raises(ResumeError, match="nothing to resume from") as info:
        resolve_resume("latest", tmp_path, RUN, access())
    assert "--resume hub" in (info.value.hint or "")


def test_hub_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match="needs a Hub token") as info:
        resolve_resume("hub", tmp_path, RUN, access(token=None))
    assert "HF_TOKEN" in (info.value.hint or "")


def _published_hub(tmp_path: Path) -> tuple[FolderHub, dict[int, Path]]:
    """Steps 50 and 100 of this run and 150 of another run on the Hub, nothing local."""
    staging, hub = tmp_path / "staging", FolderHub()
    originals = {}
    for step, run_id, ts in ((50, RUN, "20260101_000050"), (100, RUN, "20260101_000100"),
                             (150, OTHER_RUN, "20260101_000150")):
        folder = make_checkpoint(staging, step, run_id, marker=False)
        manifest = manifest_for(folder, run_id=run_id, step=step, card=b"# model card\n")
        hub.publish(f"alice/llama3-medical-ner-checkpoint-{step}-{ts}", folder, manifest,
                    tmp_path / "remote")
        originals[step] = folder
    hub.repos["alice/unrelated-model"] = tmp_path
    return hub, originals


def test_hub_restores_this_runs_newest_checkpoint(tmp_path: Path) -> None:
    hub, originals = _published_hub(tmp_path)
    out = tmp_path / "out"
    point = resolve_resume("hub", out, RUN, access(), lambda _: hub)
    assert point.step == 100 and point.path == out / "checkpoint-100"
    assert point.origin_repo == "alice/llama3-medical-ner-checkpoint-100-20260101_000100"
    restored = sorted(p.relative_to(point.path).as_posix() for p in point.path.rglob("*")
                      if p.is_file())
    assert restored == ["adapter_model.safetensors", "sub/rng_state.pth", "trainer_state.json"]
    assert (point.path / "adapter_model.safetensors").read_bytes() == (
        originals[100] / "adapter_model.safetensors").read_bytes()
    marker = read_marker(out, "checkpoint-100")
    assert marker is not None and marker.origin_repo == point.origin_repo
    assert marker.run_id == RUN and marker.matches(point.path)
    assert ("alice/llama3-medical-ner-checkpoint-100-20260101_000100", "README.md") in (
        hub.downloads)  # the generated card is verified too, just not placed
    assert not list(out.glob(f"{RESTORE_TMP_PREFIX}*"))
    assert sorted(p.name for p in out.iterdir()) == [".complete", "checkpoint-100"]


def test_a_corrupt_repo_falls_back_to_the_next_older(tmp_path: Path) -> None:
    hub, _ = _published_hub(tmp_path)
    remote = hub.repos["alice/llama3-medical-ner-checkpoint-100-20260101_000100"]
    (remote / "sub" / "rng_state.pth").write_bytes(b"bit rot")
    out = tmp_path / "out"
    restored = restore_newest(out, hub, namespace="alice", prefix="llama3-medical-ner",
                              run_id=RUN)
    assert restored is not None and restored.step == 50
    assert not (out / "checkpoint-100").exists()
    assert not list(out.glob(f"{RESTORE_TMP_PREFIX}*"))


def test_a_newer_local_checkpoint_wins_over_the_hub(tmp_path: Path) -> None:
    hub, _ = _published_hub(tmp_path)
    out = tmp_path / "out"
    make_checkpoint(out, 100)
    point = resolve_resume("hub", out, RUN, access(namespace="alice"), lambda _: hub)
    assert point.step == 100 and point.origin_repo is None
    assert not any(name == "adapter_model.safetensors" for _, name in hub.downloads)


def test_hub_replaces_a_stale_local_folder(tmp_path: Path) -> None:
    hub, _ = _published_hub(tmp_path)
    out = tmp_path / "out"
    stale = make_checkpoint(out, 100, marker=False)
    (stale / "junk.bin").write_bytes(b"half-written")
    point = resolve_resume("hub", out, RUN, access(), lambda _: hub)
    assert point.step == 100 and not (point.path / "junk.bin").exists()


def test_hub_with_nothing_of_this_run_is_one_error(tmp_path: Path) -> None:
    hub, _ = _published_hub(tmp_path)
    with pytest.raises(ResumeError, match="no verifiable checkpoint repo of run"):
        resolve_resume("hub", tmp_path / "out", "00000000-0000-0000-0000-000000000000",
                       access(), lambda _: hub)
    assert not markers_dir(tmp_path / "out").exists()


def test_unsafe_manifest_paths_are_rejected(tmp_path: Path) -> None:
    hub, _ = _published_hub(tmp_path)
    repo = "alice/llama3-medical-ner-checkpoint-100-20260101_000100"
    manifest_path = hub.repos[repo] / "checkpoint_manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace('"sub/rng_state.pth"',
                                                               '"../../escape"'))
    restored = restore_newest(tmp_path / "out", hub, namespace="alice",
                              prefix="llama3-medical-ner", run_id=RUN)
    assert restored is not None and restored.step == 50


def test_a_missing_file_falls_back_but_a_network_error_aborts(tmp_path: Path) -> None:
    hub, _ = _published_hub(tmp_path)
    newest = hub.repos["alice/llama3-medical-ner-checkpoint-100-20260101_000100"]
    (newest / "trainer_state.json").unlink()
    point = resolve_resume("hub", tmp_path / "out", RUN, access(), lambda _: hub)
    assert point.step == 50

    class Offline(FolderHub):
        def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
            raise ConnectionError("connection refused")

    offline = Offline()
    offline.repos = hub.repos
    with pytest.raises(ResumeError, match=r"cannot reach .*ConnectionError"):
        resolve_resume("hub", tmp_path / "out2", RUN, access(), lambda _: offline)
    assert not list((tmp_path / "out2").glob(f"{RESTORE_TMP_PREFIX}*"))


def test_an_unmarked_finished_save_is_resumed_from_and_marked(tmp_path: Path) -> None:
    """A preemption between trainer_state.json and the marker (a real Trainer stopped there:
    test_preemption_window): resumed from, then marked without touching a file."""
    from tests.support.checkpoints import write_checkpoint
    from trainer.callbacks import mark_resumed_checkpoint

    write_checkpoint(tmp_path, 50, run_id=RUN)
    folder = write_checkpoint(tmp_path, 100, marker=False)
    half = write_checkpoint(tmp_path, 150, marker=False)
    (half / "trainer_state.json").unlink()  # preempted before trainer_state.json
    stale = write_checkpoint(tmp_path, 200, run_id=RUN)
    (stale / "optimizer.pt").write_bytes(b"rewritten since its marker")
    point = latest_local(tmp_path, RUN)
    assert point is not None and (point.step, point.marked) == (100, False)
    assert resolve_resume("latest", tmp_path, RUN, access()).path == folder

    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    marker = mark_resumed_checkpoint(tmp_path, "checkpoint-100", RUN)
    assert marker is not None and marker.run_id == RUN and marker.matches(folder)
    assert marker.written_datetime.timestamp() == pytest.approx(
        (folder / "trainer_state.json").stat().st_mtime, abs=1e-6)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before
    assert read_marker(tmp_path, "checkpoint-100") == marker
    again = latest_local(tmp_path, RUN)
    assert again is not None and (again.step, again.marked) == (100, True)
    # Marked already, half-written, or not a checkpoint: left alone.
    assert mark_resumed_checkpoint(tmp_path, "checkpoint-100", OTHER_RUN) is None
    assert mark_resumed_checkpoint(tmp_path, "checkpoint-150", RUN) is None
    assert read_marker(tmp_path, "checkpoint-150") is None
    assert mark_resumed_checkpoint(tmp_path, "checkpoint-300", RUN) is None


@pytest.mark.parametrize("damage", ["truncated", "wrong step", "temporary file"])
def test_an_unmarked_unfinished_folder_is_not_resumed_from(tmp_path: Path, damage: str) -> None:
    from tests.support.checkpoints import write_checkpoint

    write_checkpoint(tmp_path, 50, run_id=RUN)
    folder = write_checkpoint(tmp_path, 100, marker=False)
    state = folder / "trainer_state.json"
    if damage == "truncated":
        state.write_text(state.read_text()[:20])
    elif damage == "wrong step":
        state.write_text('{"global_step": 99}')
    else:
        (folder / ".tmp1234").write_bytes(b"half")
    point = latest_local(tmp_path, RUN)
    assert point is not None and (point.step, point.marked) == (50, True)
