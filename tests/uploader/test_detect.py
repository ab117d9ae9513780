import json
import logging
import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.layout import FolderRef, Kind, classify, marker_path
from shared.markers import Marker, build_marker, snapshot_files, write_marker
from uploader import detect
from uploader.detect import CompletionDetector, Verdict, check_safetensors_header

DEADLINE = 20.0
LATER = 600.0  # seconds after the files were written: past the settle window, not abandoned
SETTLE = 30.0


def safetensors_bytes(floats: int = 4) -> bytes:
    header = {"__metadata__": {"format": "pt"},
              "w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"\0" * (4 * floats)


def write_checkpoint(output_dir: Path, step: int = 10, *, name: str | None = None,
                     weights: str = "adapter", trainer_state: bool = True) -> Path:
    folder = output_dir / (name or f"checkpoint-{step}")
    folder.mkdir(parents=True, exist_ok=True)
    if weights == "adapter":
        (folder / "adapter_model.safetensors").write_bytes(safetensors_bytes())
        (folder / "adapter_config.json").write_text('{"r": 16}')
    elif weights == "model":
        (folder / "model.safetensors").write_bytes(safetensors_bytes())
    elif weights == "bin":
        (folder / "pytorch_model.bin").write_bytes(b"pickle")
    elif weights == "sharded":
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
        for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
            (folder / shard).write_bytes(safetensors_bytes())
    elif weights == "deepspeed":
        (folder / f"global_step{step}").mkdir()
        (folder / f"global_step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"ds")
        (folder / "latest").write_text(f"global_step{step}")
    elif weights == "fsdp":
        (folder / "pytorch_model_fsdp_0").mkdir()
        (folder / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"dcp")
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "optimizer.pt").write_bytes(b"o" * 64)
    if trainer_state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step,
                                                               "log_history": []}))
    return folder


def ref_of(name: str) -> FolderRef:
    ref = classify(name)
    assert ref is not None
    return ref


def settled_detector(output_dir: Path, **kw) -> CompletionDetector:
    return CompletionDetector(output_dir, SETTLE, clock=lambda: time.time() + LATER, **kw)


# -- the slow writer -----------------------------------------------------------------------------


class SlowWriter(threading.Thread):
    """Writes a checkpoint in Trainer's order, pausing after each step until the checker has
    judged the folder as it is then, after the settle window (so every pause outlasts it)."""

    def __init__(self, folder: Path, step: int) -> None:
        super().__init__(daemon=True)
        self.folder, self.step = folder, step
        self.waiting = threading.Event()  # set while paused: judge the folder now
        self.judged = threading.Event()  # the checker saw this paused state, settled
        self.finished = threading.Event()
        self.pauses: list[str] = []
        self.error: BaseException | None = None

    def pause(self, label: str) -> None:
        self.pauses.append(label)
        self.judged.clear()
        self.waiting.set()
        if not self.judged.wait(DEADLINE):
            raise TimeoutError(f"the checker never judged the folder at {label}")

    def write(self, name: str, data: bytes) -> None:
        (self.folder / name).write_bytes(data)
        self.pause(name)

    def run(self) -> None:
        try:
            self._write_all()
            self.finished.set()
        except BaseException as exc:
            self.error = exc
            self.finished.set()

    def _write_all(self) -> None:
        self.folder.mkdir()
        self.pause("empty folder")
        self.write("README.md", b"# adapter\n")
        blob = safetensors_bytes(1024)
        tmp = self.folder / ".tmpa1b2c3"
        with open(tmp, "wb") as fh:  # safetensors: a temporary name, then a rename
            fh.write(blob[: len(blob) // 2])
            fh.flush()
            self.pause("half of .tmpa1b2c3")
            fh.write(blob[len(blob) // 2 :])
        self.pause(".tmpa1b2c3 complete, not renamed")
        os.rename(tmp, self.folder / "adapter_model.safetensors")
        self.pause("adapter_model.safetensors")
        self.write("adapter_config.json", b'{"r": 16, "peft_type": "LORA"}')
        self.write("tokenizer.json", b'{"version": "1.0"}')
        self.write("tokenizer_config.json", b"{}")
        self.write("special_tokens_map.json", b"{}")
        self.write("training_args.bin", b"args")
        self.write("optimizer.pt", b"o" * 8192)
        self.write("scheduler.pt", b"s" * 64)
        self.write("rng_state.pth", b"r" * 64)
        state = json.dumps({"global_step": self.step, "epoch": 1.0,
                            "log_history": [{"step": self.step, "loss": 0.5}]}).encode()
        with open(self.folder / "trainer_state.json", "w+b") as fh:  # plain open("w")
            fh.write(state[: len(state) // 2])
            fh.flush()
            self.pause("half of trainer_state.json")
            fh.write(state[len(state) // 2 :])


def test_slow_writer_is_complete_only_after_the_last_write(tmp_path):
    settle = 0.05
    folder = tmp_path / "checkpoint-40"
    detector = CompletionDetector(tmp_path, settle)
    writer = SlowWriter(folder, 40)
    writer.start()
    ref = ref_of("checkpoint-40")
    verdicts: list[tuple[bool, Verdict, str]] = []
    complete = None
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        finished_before = writer.finished.is_set()
        paused_before = writer.waiting.is_set()
        detection = detector.check(ref)
        verdicts.append((finished_before, detection.verdict, detection.reason))
        if detection.verdict is Verdict.COMPLETE:
            assert finished_before, f"COMPLETE while still being written: {writer.pauses[-1]}"
            complete = detection
            break
        assert detection.verdict in (Verdict.NOT_YET, Verdict.GONE), detection
        if paused_before and not detection.reason.startswith("settling"):
            writer.waiting.clear()
            writer.judged.set()
        writer.finished.wait(settle / 5)  # a short poll interval; wakes early at the end
    assert writer.error is None
    assert complete is not None, verdicts[-3:]
    assert complete.version.files == snapshot_files(folder)
    assert complete.version.step == 40 and complete.version.detected_by == "settle"
    # Every pause was judged once settled, so each intermediate state was really tested.
    assert len(writer.pauses) == 14
    reasons = " | ".join(r for _, _, r in verdicts)
    for expected in ("temporary file .tmpa1b2c3", "waiting for trainer_state.json",
                     "trainer_state.json does not parse", "no model or adapter weights"):
        assert expected in reasons


# -- the marker road -----------------------------------------------------------------------------


def test_matching_marker_is_complete_at_once(tmp_path):
    folder = write_checkpoint(tmp_path, 10)
    when = datetime(2026, 11, 4, 14, 30, 22, tzinfo=UTC)
    write_marker(tmp_path, build_marker(tmp_path, "checkpoint-10", run_id="run-1", step=10,
                                        now=when))
    detector = CompletionDetector(tmp_path, 3600.0)  # a settle window that cannot pass
    detection = detector.check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.COMPLETE
    version = detection.version
    assert version.detected_by == "marker" and version.run_id == "run-1"
    assert version.timestamp == when and version.marker is not None
    assert version.files == snapshot_files(folder) and version.origin_repo is None
    assert version.total_bytes == sum(f.size for f in version.files)


def test_stale_marker_is_not_trusted(tmp_path, caplog):
    folder = write_checkpoint(tmp_path, 10)
    write_marker(tmp_path, build_marker(tmp_path, "checkpoint-10", run_id="run-1", step=10))
    with open(folder / "optimizer.pt", "ab") as fh:  # rewritten after the marker
        fh.write(b"more")
    caplog.set_level(logging.INFO, logger="uploader.detect")
    detection = CompletionDetector(tmp_path, 3600.0).check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.NOT_YET
    assert "stale" in caplog.text
    settled = settled_detector(tmp_path).check(ref_of("checkpoint-10"))
    assert settled.verdict is Verdict.COMPLETE and settled.version.detected_by == "settle"
    assert settled.version.run_id is None and settled.version.marker is None


@pytest.mark.parametrize("bad", ["garbage", "wrong step"])
def test_malformed_marker_falls_through_to_settling(tmp_path, caplog, bad):
    write_checkpoint(tmp_path, 10)
    path = marker_path(tmp_path, "checkpoint-10")
    if bad == "garbage":
        path.parent.mkdir()
        path.write_text("{not json")
    else:
        good = build_marker(tmp_path, "checkpoint-10", run_id="r", step=10)
        write_marker(tmp_path, Marker(**{**good.__dict__, "step": 11}))
    caplog.set_level(logging.WARNING, logger="uploader.detect")
    assert CompletionDetector(tmp_path, 3600.0).check(ref_of("checkpoint-10")).verdict is (
        Verdict.NOT_YET)
    assert "marker not trusted" in caplog.text
    assert settled_detector(tmp_path).check(ref_of("checkpoint-10")).verdict is Verdict.COMPLETE


def test_marker_of_a_checkpoint_restored_from_the_hub(tmp_path):
    write_checkpoint(tmp_path, 10)
    write_marker(tmp_path, build_marker(tmp_path, "checkpoint-10", run_id="run-1", step=10,
                                        origin_repo="me/p-checkpoint-10-20261104_143022"))
    version = CompletionDetector(tmp_path, 3600.0).check(ref_of("checkpoint-10")).version
    assert version.origin_repo == "me/p-checkpoint-10-20261104_143022"


# -- the settle road ----------------------------------------------------------------------------


def test_settle_window_is_measured_as_mtime_age(tmp_path):
    folder = write_checkpoint(tmp_path, 10)
    newest = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
    now = [newest + SETTLE - 1]
    detector = CompletionDetector(tmp_path, SETTLE, clock=lambda: now[0])
    detection = detector.check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.NOT_YET and detection.reason.startswith("settling")
    now[0] = newest + SETTLE + 1
    assert detector.check(ref_of("checkpoint-10")).verdict is Verdict.COMPLETE
    # A restarted uploader needs no new window: the files are as old as they are.
    restarted = CompletionDetector(tmp_path, SETTLE, clock=lambda: newest + SETTLE + 1)
    assert restarted.check(ref_of("checkpoint-10")).verdict is Verdict.COMPLETE


@pytest.mark.parametrize("weights", ["adapter", "model", "bin", "sharded", "deepspeed", "fsdp"])
def test_weight_layouts(tmp_path, weights):
    write_checkpoint(tmp_path, 10, weights=weights)
    detection = settled_detector(tmp_path).check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.COMPLETE, detection.reason
    assert detection.version.step == 10


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("no weights", "no model or adapter weights"),
        ("no adapter config", "adapter_config.json missing"),
        ("no trainer state", "waiting for trainer_state.json"),
        ("missing shard", "names model-00002-of-00002.safetensors"),
        ("temporary file", "temporary file"),
        ("tmp suffix", "temporary file"),
        ("bad json", "tokenizer_config.json does not parse"),
        ("truncated safetensors", "adapter_model.safetensors is not a readable"),
        ("huge header length", "adapter_model.safetensors is not a readable"),
    ],
)
def test_incomplete_folders_are_not_yet(tmp_path, damage, reason):
    weights = "sharded" if damage == "missing shard" else "adapter"
    folder = write_checkpoint(tmp_path, 10, weights=weights,
                              trainer_state=damage != "no trainer state")
    if damage == "no weights":
        (folder / "adapter_model.safetensors").unlink()
    elif damage == "no adapter config":
        (folder / "adapter_config.json").unlink()
    elif damage == "missing shard":
        (folder / "model-00002-of-00002.safetensors").unlink()
    elif damage == "temporary file":
        (folder / ".tmpx9z").write_bytes(b"partial")
    elif damage == "tmp suffix":
        (folder / "sub").mkdir()
        (folder / "sub" / "rng_state.pth.tmp").write_bytes(b"partial")
    elif damage == "bad json":
        (folder / "tokenizer_config.json").write_text('{"a": ')
    elif damage == "truncated safetensors":
        data = (folder / "adapter_model.safetensors").read_bytes()
        (folder / "adapter_model.safetensors").write_bytes(data[:-3])
    elif damage == "huge header length":
        (folder / "adapter_model.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{}")
    detection = settled_detector(tmp_path).check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.NOT_YET
    assert reason in detection.reason
    # Long after the last change, the same problem means an interrupted save: INVALID.
    old = CompletionDetector(tmp_path, SETTLE, clock=lambda: time.time() + 10 * LATER,
                             abandoned_after=LATER * 2)
    assert old.check(ref_of("checkpoint-10")).verdict is Verdict.INVALID


def test_global_step_mismatch_is_invalid_once_settled(tmp_path):
    folder = write_checkpoint(tmp_path, 10)
    (folder / "trainer_state.json").write_text('{"global_step": 12}')
    assert CompletionDetector(tmp_path, SETTLE).check(ref_of("checkpoint-10")).verdict is (
        Verdict.NOT_YET)
    detection = settled_detector(tmp_path).check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.INVALID
    assert "global_step 12" in detection.reason


@pytest.mark.parametrize(
    ("extra", "step"),
    [
        ({}, 0),
        ({"eval_results.json": {"global_step": 120, "eval_loss": 0.3}}, 120),
        ({"eval_results.json": {"step": 90}}, 90),
        ({"trainer_state.json": {"global_step": 150}, "eval_results.json": {"step": 90}}, 150),
    ],
)
def test_final_folder(tmp_path, extra, step):
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    (folder / "adapter_config.json").write_text("{}")
    for name, doc in extra.items():
        (folder / name).write_text(json.dumps(doc))
    detection = settled_detector(tmp_path).check(ref_of("final"))
    assert detection.verdict is Verdict.COMPLETE, detection.reason
    assert detection.version.step == step and detection.version.ref.kind is Kind.FINAL


def test_final_folder_needs_adapter_weights(tmp_path):
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(safetensors_bytes())
    assert settled_detector(tmp_path).check(ref_of("final")).verdict is Verdict.NOT_YET


def test_change_during_the_check_is_not_complete(tmp_path, monkeypatch):
    folder = write_checkpoint(tmp_path, 10)
    real_validate = detect._validate

    def validate_while_written(path, scan):
        with open(folder / "optimizer.pt", "ab") as fh:
            fh.write(b"x")
        return real_validate(path, scan)

    monkeypatch.setattr(detect, "_validate", validate_while_written)
    detection = settled_detector(tmp_path).check(ref_of("checkpoint-10"))
    assert detection.verdict is Verdict.NOT_YET and "changed" in detection.reason


def test_gone_and_not_a_directory(tmp_path):
    folder = write_checkpoint(tmp_path, 10)
    detector = settled_detector(tmp_path)
    assert detector.check(ref_of("checkpoint-10")).verdict is Verdict.COMPLETE
    shutil.rmtree(folder)
    assert detector.check(ref_of("checkpoint-10")).verdict is Verdict.GONE
    (tmp_path / "checkpoint-11").write_text("a file")
    assert detector.check(ref_of("checkpoint-11")).verdict is Verdict.INVALID
    real = write_checkpoint(tmp_path / "elsewhere", 12)
    (tmp_path / "checkpoint-12").symlink_to(real)
    assert detector.check(ref_of("checkpoint-12")).verdict is Verdict.INVALID


# -- versions and the cache ---------------------------------------------------------------------


def test_version_key_is_stable_and_changes_with_content(tmp_path):
    folder = write_checkpoint(tmp_path, 10)
    key = settled_detector(tmp_path).check(ref_of("checkpoint-10")).version.version_key
    # Same content: same key, also from a new detector (a restarted uploader).
    assert settled_detector(tmp_path).check(ref_of("checkpoint-10")).version.version_key == key
    # Rewritten in place with the same size: the mtime changes.
    optimizer = folder / "optimizer.pt"
    st = optimizer.stat()
    optimizer.write_bytes(b"O" * st.st_size)
    os.utime(optimizer, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    key2 = settled_detector(tmp_path).check(ref_of("checkpoint-10")).version.version_key
    assert key2 != key
    # Replaced by a new file with identical size and mtime: only the inode tells.
    st = optimizer.stat()
    optimizer.rename(folder / "old.pt")
    optimizer.write_bytes(b"P" * st.st_size)
    os.utime(optimizer, ns=(st.st_atime_ns, st.st_mtime_ns))
    (folder / "old.pt").unlink()
    key3 = settled_detector(tmp_path).check(ref_of("checkpoint-10")).version.version_key
    assert key3 not in (key, key2)


def test_unchanged_complete_folder_is_not_read_again(tmp_path, monkeypatch):
    folder = write_checkpoint(tmp_path, 10)
    detector = settled_detector(tmp_path)
    first = detector.check(ref_of("checkpoint-10"))
    assert first.verdict is Verdict.COMPLETE
    reads: list[str] = []
    real_validate, real_read_marker = detect._validate, detect.read_marker
    monkeypatch.setattr(detect, "_validate",
                        lambda *a: reads.append("validate") or real_validate(*a))
    monkeypatch.setattr(detect, "read_marker",
                        lambda *a: reads.append("marker") or real_read_marker(*a))
    for _ in range(3):
        assert detector.check(ref_of("checkpoint-10")) is first
    assert reads == []
    (folder / "scheduler.pt").write_bytes(b"s")  # a change: judged afresh
    second = detector.check(ref_of("checkpoint-10"))
    assert reads == ["marker", "validate"]
    assert second.verdict is Verdict.COMPLETE
    assert second.version.version_key != first.version.version_key


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (safetensors_bytes(), None),
        (b"\1\0", "too short"),
        ((100).to_bytes(8, "little") + b"{}", "exceeds the file size"),
        ((0).to_bytes(8, "little"), "out of range"),
        ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
        ((2).to_bytes(8, "little") + b"{x", "not JSON"),
        (safetensors_bytes()[:-1], "only 15 data bytes"),
    ],
)
def test_safetensors_header_check(tmp_path, data, problem):
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    found = check_safetensors_header(path)
    assert found is None if problem is None else problem in found


def test_unmarked_folder_of_a_run_in_progress_is_abandoned_after_its_deadline(tmp_path):
    # The trainer died mid-save and its run never ended: no marker will ever come.
    folder = write_checkpoint(tmp_path, 10)
    newest = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
    now = [newest + 100]
    detector = CompletionDetector(tmp_path, SETTLE, clock=lambda: now[0], abandoned_after=3600,
                                  markers_expected=lambda: True)
    waiting = detector.check(ref_of("checkpoint-10"))
    assert waiting.verdict is Verdict.NOT_YET and "marker" in waiting.reason
    now[0] = newest + 3601
    abandoned = detector.check(ref_of("checkpoint-10"))
    assert abandoned.verdict is Verdict.INVALID and "abandoned" in abandoned.reason
    # ...so it no longer holds up pruning, which waits only for saves under way.
    from uploader.prune import FolderFacts, PrunePolicy, plan_prune

    facts = [FolderFacts("checkpoint-10", 10, abandoned.verdict, None, 0)]
    assert plan_prune([], facts, PrunePolicy(keep_last=1)).blocked is None
