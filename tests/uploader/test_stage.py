import errno
import json
import logging
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest

from shared.layout import classify
from uploader import stage as stage_module
from uploader.detect import CompletionDetector, FolderVersion, Verdict
from uploader.errors import StagingError
from uploader.stage import DEFAULT_DENYLIST, Stager

SETTLE = 30.0
LATER = 600.0
Usage = namedtuple("Usage", "total used free")


def make_folder(output_dir: Path, step: int = 10) -> Path:
    folder = output_dir / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "adapter_model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + b"\1" * 8)
    (folder / "adapter_config.json").write_text('{"r": 16}')
    (folder / "optimizer.pt").write_bytes(os.urandom(4096))
    (folder / "sub" / "shard.bin").write_bytes(b"shard")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def detect(output_dir: Path, name: str = "checkpoint-10") -> FolderVersion:
    detector = CompletionDetector(output_dir, SETTLE, clock=lambda: time.time() + LATER)
    detection = detector.check(classify(name))
    assert detection.verdict is Verdict.COMPLETE, detection.reason
    return detection.version


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


@pytest.fixture
def stager(out):
    return Stager(out / ".uploader" / "staging")


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_rotation_after_staging_loses_nothing(out, stager):
    folder = make_folder(out)
    before = contents(folder)
    version = detect(out)
    staged = stager.stage(folder, version)
    assert staged.path == stager.root / version.version_key
    assert staged.files == version.files and staged.skipped == ()
    assert not staged.path.name.startswith("checkpoint-")
    # Hard links: the same inode, no copy.
    assert (staged.path / "optimizer.pt").stat().st_ino == (folder / "optimizer.pt").stat().st_ino
    shutil.rmtree(folder)  # rotation
    assert contents(staged.path) == before  # only the checkpoint's files, every byte
    assert stager.unchanged(staged)
    # After a restart, from disk.
    assert Stager(stager.root).get(version.version_key) == staged
    assert stager.stage(folder, version) == staged  # idempotent, even with the source gone


def test_in_place_rewrite_of_the_original_is_noticed(out, stager):
    folder = make_folder(out)
    staged = stager.stage(folder, detect(out))
    with open(folder / "optimizer.pt", "r+b") as fh:  # torch.save into the same inode
        fh.write(b"rewritten")
    assert not stager.unchanged(staged)
    stager.remove(staged.key)
    assert stager.get(staged.key) is None and not staged.path.exists()


def test_symlink_leaving_the_folder_is_skipped_and_named(out, stager, tmp_path, caplog):
    folder = make_folder(out)
    secret = tmp_path / "outside" / "credentials"
    secret.parent.mkdir()
    secret.write_text("hf_secret")
    (folder / "notes.txt").symlink_to(secret)
    (folder / "sub" / "up").symlink_to("../../")  # a directory outside, relative
    (folder / "alias.json").symlink_to("adapter_config.json")  # inside: staged as bytes
    caplog.set_level(logging.WARNING, logger="uploader.stage")
    staged = stager.stage(folder, detect(out))
    skipped = dict(staged.skipped)
    assert set(skipped) == {"notes.txt", "sub/up"}
    assert str(secret) in skipped["notes.txt"] and "outside" in skipped["notes.txt"]
    assert "notes.txt" in caplog.text and "sub/up" in caplog.text
    assert not (staged.path / "notes.txt").exists()
    assert "hf_secret" not in str(contents(staged.path))
    alias = staged.path / "alias.json"
    assert not alias.is_symlink() and alias.read_text() == '{"r": 16}'
    assert {f.path for f in staged.files} >= {"alias.json", "adapter_config.json"}
    assert stager.unchanged(staged)
    assert Stager(stager.root).get(staged.key).skipped == staged.skipped


def test_denylisted_files_are_never_staged(out, stager, caplog):
    folder = make_folder(out)
    for name in (".env", "server.pem", "tls.KEY", "id_rsa.pub", "sub/.netrc", ".git-credentials",
                 "run.secret"):
        (folder / name).write_text("secret")
    (folder / "link-to-env.txt").symlink_to(".env")
    caplog.set_level(logging.WARNING, logger="uploader.stage")
    staged = Stager(stager.root, (*DEFAULT_DENYLIST, "*.secret")).stage(folder, detect(out))
    skipped = dict(staged.skipped)
    assert set(skipped) == {".env", "server.pem", "tls.KEY", "id_rsa.pub", "sub/.netrc",
                            ".git-credentials", "run.secret", "link-to-env.txt"}
    assert "*.pem" in skipped["server.pem"]
    assert "server.pem" in caplog.text
    assert "secret" not in {v.decode(errors="replace") for v in contents(staged.path).values()}


def test_paths_the_hub_refuses_are_skipped_not_failed_every_round(out, stager):
    folder = make_folder(out)
    for rel in (".git/config", "sub/.git/HEAD", ".cache/huggingface/download/x.metadata"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x")
    (folder / ".gitattributes").write_text("*.bin filter=lfs\n")  # not reserved: kept
    staged = stager.stage(folder, detect(out))
    skipped = dict(staged.skipped)
    assert set(skipped) == {".git/config", "sub/.git/HEAD",
                            ".cache/huggingface/download/x.metadata"}
    assert all("the Hub refuses" in reason for reason in skipped.values())
    assert ".gitattributes" in {f.path for f in staged.files}


def test_special_files_are_skipped(out, stager):
    folder = make_folder(out)
    os.mkfifo(folder / "pipe")
    staged = stager.stage(folder, detect(out))
    assert dict(staged.skipped)["pipe"].startswith("not a regular file")


def test_file_changed_since_detection_is_refused(out, stager):
    folder = make_folder(out)
    version = detect(out)
    with open(folder / "optimizer.pt", "ab") as fh:
        fh.write(b"more")
    with pytest.raises(StagingError, match=r"optimizer\.pt changed"):
        stager.stage(folder, version)
    assert list(stager.root.iterdir()) == []


def test_file_gone_since_detection_is_refused(out, stager):
    folder = make_folder(out)
    version = detect(out)
    (folder / "optimizer.pt").unlink()
    with pytest.raises(StagingError, match="disappeared"):
        stager.stage(folder, version)
    assert list(stager.root.iterdir()) == []


def test_cross_device_falls_back_to_a_copy(out, stager, monkeypatch):
    folder = make_folder(out)
    version = detect(out)

    def no_link(*args, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(stage_module.os, "link", no_link)
    staged = stager.stage(folder, version)
    assert staged.files == version.files  # mtimes kept on the copies
    assert (staged.path / "optimizer.pt").stat().st_ino != (folder / "optimizer.pt").stat().st_ino
    assert contents(staged.path) == contents(folder)
    with open(folder / "optimizer.pt", "r+b") as fh:
        fh.write(b"rewritten")
    assert stager.unchanged(staged)  # a copy is not affected by the original's rewrite


def test_cross_device_without_space_fails_clearly(out, stager, monkeypatch):
    folder = make_folder(out)
    version = detect(out)
    monkeypatch.setattr(stage_module.os, "link",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "EXDEV")))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StagingError) as info:
        stager.stage(folder, version)
    message = info.value.message
    assert "checkpoint-10" in message and str(version.total_bytes) in message
    assert "1000 are free" in message
    assert "hard-linked" in info.value.hint
    assert list(stager.root.iterdir()) == []


def test_reconcile_removes_partial_uncommitted_and_unknown(out, stager, monkeypatch):
    make_folder(out, 10)
    make_folder(out, 20)
    make_folder(out, 30)
    live = stager.stage(out / "checkpoint-10", detect(out, "checkpoint-10"))
    dead = stager.stage(out / "checkpoint-20", detect(out, "checkpoint-20"))
    # A kill -9 after the rename but before the metadata: content without metadata.
    v30 = detect(out, "checkpoint-30")
    monkeypatch.setattr(stage_module, "atomic_write_json",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        stager.stage(out / "checkpoint-30", v30)
    monkeypatch.undo()
    assert stager.get(v30.version_key) is None
    # A kill -9 during the build: a partial folder; and a half-written metadata file.
    (stager.root / f"{'a' * 64}.partial" / "sub").mkdir(parents=True)
    (stager.root / f".{'b' * 64}.json.x1y2.tmp").write_text("{")
    (stager.root / f"{'c' * 64}.json").write_text("{}")  # metadata without content
    (stager.root / "notes.txt").write_text("not ours")  # not our naming: left alone
    live_keys = {live.key, v30.version_key, "c" * 64}
    removed = stager.reconcile(live_keys)
    assert set(removed) == {
        dead.key, f"{dead.key}.json", v30.version_key, f"{'a' * 64}.partial",
        f".{'b' * 64}.json.x1y2.tmp", f"{'c' * 64}.json",
    }
    assert sorted(p.name for p in stager.root.iterdir()) == sorted(
        [live.key, f"{live.key}.json", "notes.txt"])
    assert stager.get(live.key) == live
    assert stager.reconcile(live_keys) == []
    # The version whose staging was interrupted stages again cleanly.
    assert stager.stage(out / "checkpoint-30", v30).files == v30.files


def test_keys_cannot_escape_the_staging_root(stager):
    for key in ("../x", "a/b", "", "x.partial"):
        with pytest.raises(ValueError):
            stager.get(key)


def test_os_errors_become_staging_errors(out, stager, monkeypatch):
    folder = make_folder(out)
    version = detect(out)

    def disk_full(root):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stage_module, "_fsync_tree", disk_full)
    with pytest.raises(StagingError) as info:
        stager.stage(folder, version)
    assert "checkpoint-10" in info.value.message and "No space" in info.value.message
    assert info.value.hint
    assert list(stager.root.iterdir()) == []


def test_staging_is_bounded_by_what_rotation_left_it_holding(out):
    stager = Stager(out / ".uploader" / "staging", max_held_bytes=1)
    first = stager.stage(make_folder(out, 10), detect(out, "checkpoint-10"))
    assert stager.held_bytes() == 0  # the trainer's folder still shares every inode
    make_folder(out, 20)
    shutil.rmtree(out / "checkpoint-10")  # rotation: now only staging keeps its bytes
    assert stager.held_bytes() == first.total_bytes
    with pytest.raises(StagingError, match="--max-staged-bytes") as caught:
        stager.stage(out / "checkpoint-20", detect(out, "checkpoint-20"))
    assert "checkpoint-20" in caught.value.message
    stager.remove(first.key)  # uploaded and verified: its staging goes
    assert stager.stage(out / "checkpoint-20", detect(out, "checkpoint-20")).files
