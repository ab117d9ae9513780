"""The progress line (issue 18): one line per checkpoint in flight on a terminal, from the bytes
huggingface_hub itself reports, redrawn in place and cleared before the verified block prints.

The tracker and the renderer run against a fake terminal (a stream that says it is a TTY, read
back through a small VT100 emulator); the real path uploads through the real client to devhub
in both transfers, in-process and as a `python -m uploader backfill` on a pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.utils import are_progress_bars_disabled

from devhub.testing import DevHub
from shared.hashing import digest_bytes
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import uploader_env
from uploader import hfcompat, progress
from uploader.cli.console import ConsoleEvents, start_progress
from uploader.events import UploadResult
from uploader.hub import LocalFile
from uploader.progress import (
    CLEAR_LINE,
    LINE_UP,
    TRACKER,
    ProgressLine,
    ProgressTracker,
    commit_progress,
    format_line,
    human_bytes,
    label_of,
    progress_wanted,
)

from .conftest import ALICE, ALICE_TOKEN, HubClientFactory

MB = 1_000_000
KEY = "alice/run-checkpoint-450-20250101_000000"
OTHER = "alice/run-checkpoint-500-20250101_000100"
ROOT = Path(__file__).resolve().parents[2]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(text: str) -> list[str]:
    """What a terminal shows after `text`: \\r, \\n, erase-to-end-of-line and cursor-up honoured;
    trailing blank lines dropped."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(text):
        char = text[i]
        match = _ESCAPE.match(text, i)
        if match:
            count, code = int(match[1] or 1), match[2]
            if code == "K":
                del rows[row][col:]
            elif code == "A":
                row = max(0, row - count)
            i = match.end()
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            while len(rows) <= row:
                rows.append([])
        else:
            line = rows[row]
            line.extend(" " * (col - len(line)))
            line[col:col + 1] = [char]
            col += 1
        i += 1
    shown = ["".join(r).rstrip() for r in rows]
    while shown and not shown[-1]:
        shown.pop()
    return shown


def tracker_with(clock: Clock) -> ProgressTracker:
    tracker = ProgressTracker(clock)
    tracker.begin(KEY, label_of(KEY), 40 * MB, {"/s/a": 30 * MB, "/s/b": 10 * MB})
    return tracker


# -- the tracker: rate and ETA from the reported bytes ----------------------------------------


def test_rate_and_eta_count_from_the_first_report() -> None:
    clock = Clock()
    tracker = tracker_with(clock)
    start = tracker.snapshot(KEY)
    assert start is not None and (start.done, start.rate, start.eta) == (0, None, None)
    assert format_line(start) == "step 450  0 B / 40.0 MB    0%  starting"

    tracker.file_bytes(KEY, "/s/a", 4 * MB)  # sent before this moment: no rate yet
    assert tracker.snapshot(KEY).rate is None
    clock.now = 2.0
    tracker.file_bytes(KEY, "/s/a", 14 * MB)
    snap = tracker.snapshot(KEY)
    assert snap.done == 14 * MB and snap.rate == pytest.approx(5 * MB)  # 10 MB in 2 s
    assert snap.eta == pytest.approx(26 / 5)
    assert format_line(snap) == "step 450  14.0 MB / 40.0 MB   35%  5.0 MB/s  ETA 0:05"

    clock.now = 4.0
    tracker.file_bytes(KEY, "/s/b", 6 * MB)  # files add up
    snap = tracker.snapshot(KEY)
    assert snap.done == 20 * MB and snap.rate == pytest.approx(4 * MB)
    assert snap.eta == pytest.approx(5.0) and snap.fraction == 0.5


def test_retried_reads_count_once_and_never_past_a_files_size() -> None:
    tracker = tracker_with(Clock())
    tracker.file_bytes(KEY, "/s/a", 8 * MB)
    tracker.file_bytes(KEY, "/s/a", 1 * MB)  # a retried PUT seeks back: nothing new was sent
    tracker.file_bytes(KEY, "/s/b", 99 * MB)  # never more than the file
    tracker.file_bytes("alice/unknown", "/s/a", 5 * MB)  # no entry: ignored
    assert tracker.snapshot(KEY).done == 18 * MB


def test_landed_reads_full_and_a_retry_carries_on() -> None:
    tracker = tracker_with(Clock())
    tracker.file_bytes(KEY, "/s/a", 30 * MB)
    tracker.landed(KEY)  # the small files went inline with the commit request
    snap = tracker.snapshot(KEY)
    assert (snap.done, snap.reported, snap.eta, snap.landed) == (40 * MB, 30 * MB, 0.0, True)
    assert format_line(snap) == "step 450  40.0 MB / 40.0 MB  100%  verifying"
    # A retried commit: the library skips what is on the server, and re-reads of a file count
    # only past the point the last attempt reached.
    tracker.begin(KEY, "step 450", 40 * MB, {"/s/a": 30 * MB, "/s/b": 10 * MB})
    tracker.file_bytes(KEY, "/s/b", 2 * MB)
    tracker.file_bytes(KEY, "/s/a", 5 * MB)
    snap = tracker.snapshot(KEY)
    assert (snap.done, snap.landed) == (32 * MB, False)
    assert tracker.finish(KEY) and tracker.snapshot(KEY) is None and not tracker.finish(KEY)


def test_labels_and_durations_read_as_people_say_them() -> None:
    assert label_of(KEY) == "step 450"
    assert label_of("alice/run-lora-final-20250101_000000") == "final"
    assert label_of("alice/something-else") == "something-else"
    assert progress.human_duration(3723) == "1:02:03" and progress.human_duration(59.6) == "1:00"


# -- the renderer: in place, cleared, around log lines ----------------------------------------


def test_frames_redraw_in_place_and_a_finished_line_is_cleared() -> None:
    clock = Clock()
    tracker = tracker_with(clock)
    tracker.begin(OTHER, label_of(OTHER), 10 * MB, {"/t/a": 10 * MB})
    tty = FakeTty()
    line = ProgressLine(tracker, tty)
    line.render()
    assert screen(tty.getvalue()) == ["step 450  0 B / 40.0 MB    0%  starting",
                                      "step 500  0 B / 10.0 MB    0%  starting"]
    drawn = len(tty.getvalue())
    line.render()  # nothing changed: nothing written
    assert len(tty.getvalue()) == drawn

    tracker.file_bytes(KEY, "/s/a", 10 * MB)
    line.render()
    frame = tty.getvalue()[drawn:]
    assert frame.startswith(CLEAR_LINE + LINE_UP + CLEAR_LINE)  # both old lines erased first
    assert screen(tty.getvalue()) == ["step 450  10.0 MB / 40.0 MB   25%  starting",
                                      "step 500  0 B / 10.0 MB    0%  starting"]

    line.finish(KEY)
    assert screen(tty.getvalue()) == ["step 500  0 B / 10.0 MB    0%  starting"]
    line.finish(OTHER)
    assert screen(tty.getvalue()) == []
    assert tty.getvalue().endswith(CLEAR_LINE)


def test_log_lines_print_above_the_progress_line() -> None:
    tracker = tracker_with(Clock())
    tty = FakeTty()
    line = ProgressLine(tracker, tty)
    line.render()
    logs = line.guard(tty)
    logs.write("12:00:01 INFO    uploader.hub: committed abc\n")
    logs.write("12:00:02 WARNING uploader.pipeline: slow\n")
    assert screen(tty.getvalue()) == ["12:00:01 INFO    uploader.hub: committed abc",
                                      "12:00:02 WARNING uploader.pipeline: slow",
                                      "step 450  0 B / 40.0 MB    0%  starting"]


def test_a_line_never_wraps_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = FakeTty()
    line = ProgressLine(tracker_with(Clock()), tty)
    monkeypatch.setattr(line, "_width", lambda: 20)
    line.render()
    assert screen(tty.getvalue()) == ["step 450  0 B / 40."]


def test_the_verified_block_prints_where_the_line_was() -> None:
    tracker = tracker_with(Clock())
    tracker.begin(OTHER, label_of(OTHER), 10 * MB, {})
    tty = FakeTty()  # stdout and stderr on one terminal
    line = ProgressLine(tracker, tty)
    line.render()
    record = SimpleNamespace(repo_id=KEY, step=450, kind="checkpoint", url=f"http://hub/{KEY}")
    ConsoleEvents(stream=tty, fmt="text", progress=line).verified(
        UploadResult(record, 8.0, 40 * MB, adopted=False))  # type: ignore[arg-type]
    line.render()
    shown = screen(tty.getvalue())
    assert "Checkpoint uploaded and verified" in shown and f"   Repo: {KEY}" in shown
    assert not [s for s in shown if s.startswith("step 450")]
    assert shown[-1] == "step 500  0 B / 10.0 MB    0%  starting"  # still in flight, below
    assert tracker.snapshot(KEY) is None


def test_a_failed_attempt_clears_its_line() -> None:
    tracker = tracker_with(Clock())
    tty = FakeTty()
    line = ProgressLine(tracker, tty)
    line.render()
    ConsoleEvents(stream=tty, fmt="text", progress=line).failed(
        SimpleNamespace(repo_id=KEY), None)  # type: ignore[arg-type]
    assert screen(tty.getvalue()) == [] and tracker.snapshot(KEY) is None


def test_the_renderer_thread_redraws_and_clears_on_stop() -> None:
    tracker = ProgressTracker()
    tracker.begin(KEY, "step 450", 4 * MB, {"/s/a": 4 * MB})
    tty = FakeTty()
    line = ProgressLine(tracker, tty, interval=0.01).start()
    try:
        tracker.file_bytes(KEY, "/s/a", 2 * MB)
        deadline = time.monotonic() + 5
        while not any("2.0 MB / 4.0 MB" in s for s in screen(tty.getvalue())):
            assert time.monotonic() < deadline, tty.getvalue()
            time.sleep(0.01)
    finally:
        line.stop()
    assert screen(tty.getvalue()) == []


# -- when it is shown: text logs on a terminal, nothing else ---------------------------------


@pytest.mark.parametrize(("fmt", "stream", "environ"), [
    ("text", io.StringIO(), {}),  # a pipe or a file: no line
    ("json", FakeTty(), {}),  # every line is JSON: no line
    ("text", FakeTty(), {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}),  # no progress at all
    ("text", FakeTty(), {"HF_HUB_DISABLE_PROGRESS_BARS": "0"}),  # the library's own bars
    ("text", FakeTty(), {"TERM": "dumb"}),
], ids=["not-a-tty", "json", "bars-disabled", "bars-forced", "dumb-terminal"])
def test_no_line_without_a_terminal_or_with_json(fmt: str, stream: io.StringIO,
                                                 environ: dict[str, str],
                                                 library_bars: None) -> None:
    assert not progress_wanted(fmt, stream, environ)
    with ExitStack() as stack:
        assert start_progress(fmt, stack, stream=stream, environ=environ) is None
        assert not TRACKER.enabled
        with commit_progress(KEY, []):
            assert TRACKER.snapshot(KEY) is None
    assert stream.getvalue() == ""


def test_on_a_terminal_the_line_replaces_the_library_bars_and_wraps_the_log_handler(
        library_bars: None) -> None:
    tty = FakeTty()
    handler = logging.StreamHandler(tty)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with ExitStack() as stack:
            line = start_progress("text", stack, stream=tty, environ={"TERM": "xterm"})
            assert line is not None and TRACKER.enabled and are_progress_bars_disabled()
            assert handler.stream is not tty  # log records write around the line
            with commit_progress(KEY, []):
                pass
            line.render()
            logging.getLogger("uploader.test").warning("a log line")
            assert screen(tty.getvalue())[-2:] == ["a log line",
                                                   "step 450  0 B / 0 B  100%  verifying"]
            line.finish(KEY)
        assert not TRACKER.enabled and handler.stream is tty
        assert screen(tty.getvalue()) == ["a log line"]
    finally:
        root.removeHandler(handler)


# -- the real path: the library's own byte counts, both transfers ----------------------------


@pytest.fixture
def tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProgressTracker]:
    monkeypatch.setattr(TRACKER, "enabled", True)
    yield TRACKER
    for snap in TRACKER.snapshots():
        TRACKER.finish(snap.key)


@pytest.mark.parametrize("use_xet", [True, False], ids=["xet", "lfs"])
def test_a_real_upload_reports_every_byte_and_draws_the_line(
        use_xet: bool, make_hub_client: HubClientFactory, tracking: ProgressTracker,
        make_local_files: Callable[[dict[str, bytes]], list[LocalFile]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = make_hub_client()
    hub = type(base)(replace(base.config, use_xet=use_xet, xet_fallback=False), base.policy)
    binary = {"adapter_model.safetensors": os.urandom(1_500_000),
              "optimizer.pt": os.urandom(600_000)}
    files = make_local_files({**binary, "adapter_config.json": b'{"r": 8}'})
    card = b"---\nlicense: mit\n---\n# card\n"
    files.append(LocalFile("README.md", digest_bytes(card), data=card))
    total = sum(f.digest.size for f in files)
    repo_id = f"{ALICE}/progress-{uuid.uuid4().hex[:8]}-checkpoint-50-20250101_000000"

    tty = FakeTty()
    line = ProgressLine(tracking, tty)
    frames: list[list[str]] = []
    reports: dict[str, list[int]] = {}
    real_report = tracking.file_bytes

    def report(key: str, path: str, done: int) -> None:
        real_report(key, path, done)
        reports.setdefault(Path(path).name, []).append(done)
        line.render()
        frames.append(screen(tty.getvalue()))

    monkeypatch.setattr(tracking, "file_bytes", report)
    xet_commits: list[object] = []
    real_commit = hfcompat._CountedXetSession.new_upload_commit

    def spied(self: object, *args: object, **kwargs: object) -> object:
        xet_commits.append(kwargs.get("progress_callback"))
        return real_commit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hfcompat._CountedXetSession, "new_upload_commit", spied)

    hub.ensure_repo(repo_id)
    hub.commit(repo_id, files, "Checkpoint at step 50")

    assert bool(xet_commits) is use_xet  # hf_xet's own progress updater, or the LFS streams
    snap = tracking.snapshot(repo_id)
    assert snap is not None and snap.landed
    # The library reported each binary (LFS/Xet) file to its last byte; the small text files
    # went inline with the commit request and count once it landed.
    assert {name: max(seen) for name, seen in reports.items()} == {
        name: len(data) for name, data in binary.items()}
    assert snap.reported == sum(len(data) for data in binary.values())
    assert snap.done == snap.total == total
    assert frames and all(f[0].startswith("step 50  ") for f in frames)
    assert any(f"/ {human_bytes(total)}" in f[0] for f in frames)
    line.finish(repo_id)
    assert screen(tty.getvalue()) == []


# -- the CLI on a real terminal ----------------------------------------------------------------


def on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120
                  ) -> tuple[int, str]:
    """`python -m uploader ARGS` with stdout and stderr on a pseudo-terminal; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "uploader", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


def backfill_on_a_terminal(devhub: DevHub, tmp_path: Path, *args: str) -> tuple[int, str]:
    out = tmp_path / "out"
    write_checkpoint(out, 50, adapter_bytes=512 * 1024, optimizer_bytes=1024 * 1024)
    env = uploader_env(devhub.url, ALICE_TOKEN, TERM="xterm", PYTHONPATH=str(ROOT))
    return on_a_terminal(["backfill", "--output-dir", str(out), "--repo-prefix",
                          f"progress-{uuid.uuid4().hex[:8]}", *args], env)


@pytest.mark.parametrize("transfer", ["xet", "lfs"])
def test_backfill_on_a_terminal_shows_the_line_then_the_block(
        transfer: str, devhub: DevHub, tmp_path: Path) -> None:
    code, shown = backfill_on_a_terminal(devhub, tmp_path, "--transfer", transfer)
    assert code == 0, shown[-3000:]
    final = screen(shown)
    size = re.search(r"   Size: (.+?) in ", "\n".join(final))
    assert size is not None, final
    # The line was drawn (bytes / total, redrawn in place), then cleared before the block.
    assert re.search(rf"step 50  [\d.]+ [KMG]?B / {re.escape(size[1])} ", shown), shown[-3000:]
    assert "Checkpoint uploaded and verified" in final
    assert not [s for s in final if s.startswith("step 50  ")], final
    # Instead of the library's per-file bars, not beside them.
    for bar in ("it/s", "Processing Files", "New Data Upload", "LFS files", "%|"):
        assert bar not in shown, bar


def test_backfill_on_a_terminal_with_json_logs_prints_only_json(devhub: DevHub,
                                                                tmp_path: Path) -> None:
    code, shown = backfill_on_a_terminal(devhub, tmp_path, "--log-format", "json")
    assert code == 0, shown[-3000:]
    assert "\x1b[" not in shown and "\r\x1b" not in shown  # no line drawn, no bar
    records = [json.loads(line) for line in shown.splitlines()]  # every line one JSON object
    assert any(r["message"] == "checkpoint on the Hub" for r in records)
