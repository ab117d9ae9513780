"""The watcher's rescans judge every unfinished folder and, in turn, a bounded number of
finished ones (issue 15: idle cost flat over 10,000 verified checkpoints), yet a finished
folder rewritten in place is still found within len(finished) / budget rescans."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from shared.layout import list_folders
from shared.run_info import start_run
from tests.support.checkpoints import write_checkpoint
from uploader.detect import CompletionDetector, Verdict
from uploader.pipeline import Pipeline, PipelineConfig
from uploader.stage import Stager
from uploader.state import State, StateStore

from .conftest import HubClientFactory

STEPS = (10, 20, 30, 40, 50)
BUDGET = 2


class CountingDetector(CompletionDetector):
    judged: list[str]  # full checks (marker read, documents parsed)
    looked: list[str]  # finished folders in their turn: the stat pass

    def check(self, ref):  # type: ignore[no-untyped-def]
        self.judged.append(ref.name)
        return super().check(ref)

    def unchanged(self, ref, step, recorded_key):  # type: ignore[no-untyped-def]
        self.looked.append(ref.name)
        return super().unchanged(ref, step, recorded_key)


@pytest.fixture
def verified(tmp_path: Path, request, make_hub_client: HubClientFactory
             ) -> tuple[Pipeline, CountingDetector, str]:
    out = tmp_path / "out"
    run = start_run(out, base_model="tiny", resume=False)
    for step in STEPS:
        write_checkpoint(out, step, run_id=run.run_id)
    store = StateStore.open(out / ".uploader")
    request.addfinalizer(store.close)
    detector = CountingDetector(out, 0.0)
    detector.judged, detector.looked = [], []
    pipeline = Pipeline(PipelineConfig(output_dir=out, namespace="alice", prefix="p"), store,
                        detector, Stager(out / ".uploader" / "staging"), make_hub_client())
    pipeline.scan()
    for record in store.all():
        store.update(record.id, state=State.VERIFIED)
    write_checkpoint(out, 60, run_id=run.run_id, marker=False)  # being written: unfinished
    return pipeline, detector, run.run_id


def test_each_rescan_judges_the_unfinished_and_a_budget_of_finished_folders(verified) -> None:
    pipeline, detector, _ = verified
    seen: set[str] = set()
    for _ in range(math.ceil(len(STEPS) / BUDGET)):
        detector.judged, detector.looked = [], []
        detections = pipeline.scan(BUDGET)
        assert set(detections) == {r.name for r in list_folders(pipeline.config.output_dir)}
        assert "checkpoint-60" in detector.judged, "an unfinished folder is judged every time"
        assert detector.judged == ["checkpoint-60"], "unchanged finished folders: no full check"
        assert 0 < len(detector.looked) <= BUDGET, detector.looked
        seen |= set(detector.looked)
        assert all(d.verdict is not Verdict.GONE for d in detections.values())
    assert seen == {f"checkpoint-{s}" for s in STEPS}, "every finished folder gets its turn"
    detector.judged = []
    pipeline.scan()  # backfill: every folder, in full
    assert len(detector.judged) == len(STEPS) + 1


def test_a_finished_folder_in_its_turn_is_judged_in_full_only_when_it_changed(verified) -> None:
    pipeline, detector, _ = verified
    out = pipeline.config.output_dir
    optimizer = out / "checkpoint-20" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[::-1])  # same size, new bytes and mtime
    gone = out / "checkpoint-30"
    for path in sorted(gone.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    gone.rmdir()
    detector.judged, detector.looked = [], []
    detections = pipeline.scan(len(STEPS))  # every finished folder in this turn
    assert set(detector.looked) == {f"checkpoint-{s}" for s in STEPS if s != 30}
    assert sorted(detector.judged) == ["checkpoint-20", "checkpoint-60"], detector.judged
    assert detections["checkpoint-10"].verdict is Verdict.COMPLETE
    assert "checkpoint-30" not in detections  # the listing saw it go


def test_a_finished_folder_rewritten_in_place_is_found_within_its_turn(verified) -> None:
    pipeline, _, run_id = verified
    out = pipeline.config.output_dir
    write_checkpoint(out, 40, run_id=run_id, seed=7)  # a re-save: new bytes, new marker
    before = len(pipeline.store.by_folder("checkpoint-40"))
    for _ in range(math.ceil(len(STEPS) / BUDGET)):
        pipeline.scan(BUDGET)
        if len(pipeline.store.by_folder("checkpoint-40")) > before:
            break
    versions = pipeline.store.by_folder("checkpoint-40")
    assert len(versions) == before + 1 and versions[0].state is State.PENDING, versions
