"""The benchmarks stay importable and runnable: `python -m bench --tiny` prints all three tables.

The tiny sizes make the figures meaningless; what is checked is that every benchmark runs end to
end (devhub, trainer, uploader as processes) and ends with its table and the expected columns.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import scale, training_overhead, upload_throughput
from bench.common import Table, ratios, rotations

pytestmark = [pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_TIMEOUT_S = 240

# The columns the README shows, and the rows each table has at the default (and tiny) sizes.
EXPECTED = {
    "Training overhead": (
        "| variant | train s | x (a) | on Hub | drain s | sidecar CPU s | devhub CPU s | target | "
        "met |", 4),
    "Upload efficiency": (
        "| transfer | size MiB | sidecar MiB/s | bare MiB/s | ratio | sha256 MiB/s | "
        "uploader RSS MiB | bare RSS MiB | sidecar CPU s/GiB | bare CPU s/GiB | target | met |",
        4),  # two sizes in each transfer (xet, lfs)
    "Scale": ("| metric | value | baseline | ratio | target | met |", 4),
}


def table_after(output: str, title: str) -> list[str]:
    """The markdown table lines that follow `## title`."""
    lines = output.splitlines()
    start = lines.index(f"## {title}")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    work = tmp_path_factory.mktemp("bench")
    return subprocess.run([sys.executable, "-m", "bench", "--tiny", "--work-dir", str(work)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=TINY_TIMEOUT_S)


@pytest.mark.parametrize("title", list(EXPECTED))
def test_tiny_run_prints_each_table_with_its_columns(tiny_run, title):
    assert tiny_run.returncode == 0, tiny_run.stdout[-3000:] + tiny_run.stderr[-3000:]
    header, count = EXPECTED[title]
    rows = table_after(tiny_run.stdout, title)
    assert rows[0] == header
    assert set(rows[1].strip("|")) == {"-", "|"}
    assert len(rows) == 2 + count
    width = header.count("|")
    assert all(row.count("|") == width for row in rows)


def test_tiny_run_uploads_everything(tiny_run):
    """The smoke run is not only a printout: the sidecar got every checkpoint up in each."""
    training = table_after(tiny_run.stdout, "Training overhead")
    sidecar = next(row for row in training if row.startswith("| d sidecar"))
    hub = sidecar.split("|")[4].strip()
    done, expected = hub.split("/")
    assert done == expected
    stream = next(row for row in table_after(tiny_run.stdout, "Scale")
                  if row.startswith("| stream checkpoints verified"))
    verified, written = stream.split("|")[2].strip().split("/")
    assert verified == written


def test_tiny_flags_shrink_every_benchmark():
    assert training_overhead.parse(["--tiny"]).max_steps > 0
    assert training_overhead.parse([]).max_steps == -1  # the seed's 450 steps
    assert max(upload_throughput.parse(["--tiny"]).sizes) < max(upload_throughput.parse([]).sizes)
    assert scale.parse(["--tiny"]).checkpoints < scale.parse([]).checkpoints == 1000


def test_table_refuses_a_row_of_the_wrong_width():
    table = Table("t", ["a", "b"])
    table.add("1", "2")
    with pytest.raises(ValueError):
        table.add("1")
    assert table.render().splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_repeats_rotate_the_variants_and_ratios_pair_them():
    order = rotations(("a", "b", "c"), 2)
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a")]
    assert ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]


def test_stream_lag_flat_and_growing():
    flat = scale.stream_result(10, [{"state": "verified", "completed_at": t, "verified_at": t + 0.5}
                                   for t in range(10)])
    assert flat.slope == pytest.approx(0.0) and flat.last_lag == flat.first_lag == 0.5
    growing = scale.stream_result(10, [{"state": "verified", "completed_at": t,
                                        "verified_at": t + 0.5 * t} for t in range(10)])
    assert growing.slope == pytest.approx(30.0)  # 0.5 s per second of stream
    assert growing.last_lag > growing.first_lag
