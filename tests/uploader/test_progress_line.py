"""The progress line, continued (README, "What it prints"): redrawn at most 4 times a second
however fast the bytes come, drawn for `watch` as for `backfill`, and with
`HF_HUB_DISABLE_PROGRESS_BARS=0` the library's own bars instead of it.

The rate is measured on the CLI's own renderer (`start_progress`, as `watch` and `backfill`
start it) against a fake terminal that timestamps every frame; the rest are real
`python -m uploader` processes on a pseudo-terminal, uploading to devhub.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from devhub.testing import DevHub
from shared.run_info import Outcome, finish_run, start_run
from tests.support.checkpoints import write_checkpoint
from tests.support.processes import uploader_env
from tests.support.waiting import wait_for
from uploader.cli.console import start_progress
from uploader.progress import TRACKER

from .conftest import ALICE_TOKEN
from .test_progress import ROOT, FakeTty, on_a_terminal, screen

MB = 1_000_000
KEY = "alice/run-checkpoint-450-20250101_000000"
MAX_REDRAWS_PER_SECOND = 4
FRAMES = 8  # observed frames: about two seconds of redraws
# Event.wait may wake a little early on a loaded box; a 5/s renderer is 50 ms short per frame.
SLACK_S = 0.01
# hf_xet's and huggingface_hub's own bars (tqdm), by their descriptions and their bar glyphs.
LIBRARY_BARS = ("Processing Files", "New Data Upload", "LFS files", "it/s", "%|")


class StampedTty(FakeTty):
    """A terminal that remembers when each progress frame was written."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[float] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if "step 450" in text:
                self.frames.append(time.monotonic())
            return super().write(text)


def test_the_line_is_redrawn_at_most_4_times_a_second(library_bars: None) -> None:
    tty = StampedTty()
    stop = threading.Event()

    def bytes_arrive() -> None:  # a report every 2 ms: every one would be a change to draw
        done = 0
        while not stop.wait(0.002):
            done = min(done + 10_000, 40 * MB)
            TRACKER.file_bytes(KEY, "/s/a", done)

    with ExitStack() as stack:
        line = start_progress("text", stack, stream=tty, environ={"TERM": "xterm"})
        assert line is not None, "a text-log terminal gets the line"
        TRACKER.begin(KEY, "step 450", 40 * MB, {"/s/a": 40 * MB})
        feeder = threading.Thread(target=bytes_arrive, daemon=True)
        feeder.start()
        try:
            wait_for(lambda: len(tty.frames) >= FRAMES, 30, f"{FRAMES} frames")
        finally:
            stop.set()
            feeder.join(5)
            TRACKER.finish(KEY)
    frames = tty.frames[:FRAMES]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 1 / MAX_REDRAWS_PER_SECOND - SLACK_S, gaps
    # ...and the changes were drawn, not held back for long (a generous bound: a loaded box).
    assert frames[-1] - frames[0] < 4 * (FRAMES - 1) / MAX_REDRAWS_PER_SECOND, gaps
    assert screen(tty.getvalue()) == []  # cleared when the CLI stopped it


def watch_on_a_terminal(devhub: DevHub, tmp_path: Path, **env: str) -> tuple[int, str]:
    out = tmp_path / "out"
    info = start_run(out, base_model="tiny", resume=False)
    write_checkpoint(out, 50, run_id=info.run_id, adapter_bytes=512 * 1024,
                     optimizer_bytes=1024 * 1024)
    finish_run(out, Outcome.COMPLETED)
    environ = uploader_env(devhub.url, ALICE_TOKEN, TERM="xterm", PYTHONPATH=str(ROOT),
                           WANDB_MODE="disabled", **env)
    return on_a_terminal(["watch", "--exit-when-done", "--output-dir", str(out),
                          "--repo-prefix", f"progress-{uuid.uuid4().hex[:8]}"], environ)


def test_watch_on_a_terminal_draws_the_line_too(devhub: DevHub, tmp_path: Path) -> None:
    code, shown = watch_on_a_terminal(devhub, tmp_path)
    assert code == 0, shown[-3000:]
    final = screen(shown)
    size = re.search(r"   Size: (.+?) in ", "\n".join(final))
    assert size is not None, final
    assert re.search(rf"step 50  [\d.]+ [KMG]?B / {re.escape(size[1])} ", shown), shown[-3000:]
    assert "Checkpoint uploaded and verified" in final
    assert not [s for s in final if s.startswith("step 50  ")], final  # cleared
    for bar in LIBRARY_BARS:
        assert bar not in shown, bar


def test_progress_bars_disabled_0_shows_the_librarys_own_bars_instead(
        devhub: DevHub, tmp_path: Path) -> None:
    code, shown = watch_on_a_terminal(devhub, tmp_path, HF_HUB_DISABLE_PROGRESS_BARS="0")
    assert code == 0, shown[-3000:]
    assert "Checkpoint uploaded and verified" in screen(shown)
    assert not re.search(r"step 50  [\d.]+ [KMG]?B / ", shown), "our line was drawn too"
    assert any(bar in shown for bar in LIBRARY_BARS), shown[-3000:]
