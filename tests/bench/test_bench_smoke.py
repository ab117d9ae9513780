"""The benchmarks stay importable and runnable: `python -m bench --tiny` prints every table.

The tiny sizes make the figures meaningless; what is checked is that every benchmark runs end to
end (devhub, trainer, uploader as processes) and ends with its table and the expected columns.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bench import scale, training_overhead, upload_throughput
from bench.common import ProcessSampler, Table, ratios, rotations

pytestmark = [pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_TIMEOUT_S = 360

# The columns the README shows, and the rows each table has at the default (and tiny) sizes.
EXPECTED = {
    "Training overhead": (
        "| variant | train s | x (a) | on Hub | drain s | sidecar CPU s | devhub CPU s | target | "
        "met |", 6),  # a-d, and a', e with the second core busy
    "Upload efficiency": (
        "| transfer | size MiB | sidecar MiB/s | bare MiB/s | ratio | sha256 MiB/s | "
        "uploader RSS MiB | bare RSS MiB | sidecar CPU s/GiB | bare CPU s/GiB | target | met |",
        4),  # two sizes in each transfer (xet, lfs)
    "Time to first byte": (
        "| transfer | size MiB | detected s | first upload call s | first byte s | "
        "first >= 1 MiB s | detected -> verified s | bare first byte s | target | met |", 4),
    "Scale": ("| metric | value | baseline | ratio | target | met |", 6),
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


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def row_of(rows: list[str], start: str) -> list[str]:
    return cells(next(row for row in rows if row.startswith(f"| {start}")))


def test_tiny_run_uploads_everything(tiny_run):
    """The smoke run is not only a printout: the sidecar got every checkpoint up in each."""
    training = table_after(tiny_run.stdout, "Training overhead")
    for sidecar in ("d sidecar", "e sidecar, second core busy"):
        done, expected = row_of(training, sidecar)[3].split("/")
        assert done == expected
    loaded = row_of(training, "e sidecar")
    assert "(a')" in loaded[7]  # (e) is judged against the loaded baseline
    assert row_of(training, "a' no uploads")[2] != "-"
    verified, written = row_of(table_after(tiny_run.stdout, "Scale"),
                               "stream checkpoints verified")[1].split("/")
    assert verified == written


def test_tiny_run_times_status_and_the_first_byte(tiny_run):
    """The figures issue 15 asks for are numbers, not dashes: `status` against `--version`,
    and the first byte (and detected -> verified) in both transfers."""
    scale_rows = table_after(tiny_run.stdout, "Scale")
    for command in ("`status`", "`status --json`"):
        row = row_of(scale_rows, command)
        assert all(float(value) > 0 for value in row[1:4]), row
        assert row[4] == "<= 1"
    assert row_of(scale_rows, "idle CPU")[4] == "<= 0.3"
    first = table_after(tiny_run.stdout, "Time to first byte")
    assert {cells(row)[0] for row in first[2:]} == {"xet", "lfs"}
    for row in first[2:]:
        assert float(cells(row)[4]) >= 0 and float(cells(row)[6]) > 0, row
    upload = table_after(tiny_run.stdout, "Upload efficiency")
    for row in upload[2:]:  # CPU seconds per GiB, sidecar and bare, in each transfer
        assert float(cells(row)[8]) > 0 and float(cells(row)[9]) > 0, row


def test_tiny_flags_shrink_every_benchmark():
    assert training_overhead.parse(["--tiny"]).max_steps > 0
    assert training_overhead.parse([]).max_steps == -1  # the seed's 450 steps
    assert max(upload_throughput.parse(["--tiny"]).sizes) < max(upload_throughput.parse([]).sizes)
    assert scale.parse(["--tiny"]).checkpoints < scale.parse([]).checkpoints == 10_000
    assert 4096 * 1024 * 1024 in upload_throughput.parse([]).sizes  # the first-byte size
    assert upload_throughput.parse([]).sizes[-1] == 8192 * 1024 * 1024  # the RSS size


def test_variants_letters_and_the_loaded_baseline():
    variants = training_overhead.parse([]).variants
    assert [training_overhead.variant_letter(v) for v in variants] == [
        "a", "b", "c", "d", "a'", "e"]
    assert training_overhead.parse(["--variants", "e"]).variants == (
        training_overhead.NONE, training_overhead.LOADED_NONE, training_overhead.LOADED_SIDECAR)
    assert training_overhead.parse(["--variants", "d"]).variants == (
        training_overhead.NONE, training_overhead.SIDECAR)


def test_first_bytes_from_the_request_log():
    log = [  # time = when the request ended, duration since devhub read its headers
        {"method": "GET", "path": "/api/whoami-v2", "time": 9.0, "duration": 0.1,
         "bytes_in": 0},
        {"method": "POST", "path": "/api/models/u/r/preupload/main", "time": 10.3,
         "duration": 0.1, "bytes_in": 200},
        {"method": "POST", "path": "/info/lfs/objects/batch", "time": 10.5, "duration": 0.1,
         "bytes_in": 300},
        {"method": "PUT", "path": "/_lfs/t1", "time": 10.7, "duration": 0.1, "bytes_in": 1536},
        {"method": "PUT", "path": "/_lfs/t2/part/1", "time": 12.0, "duration": 0.5,
         "bytes_in": 8 * 1024 * 1024},
    ]
    lfs = upload_throughput.first_bytes(log, 10.0, "lfs")
    assert lfs.first_call == pytest.approx(0.2)
    assert lfs.first_byte == pytest.approx(0.6)
    assert lfs.first_big == pytest.approx(1.5)
    xet = upload_throughput.first_bytes(log, 10.0, "xet")
    assert xet.first_call == pytest.approx(0.2) and xet.first_byte is None


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


def test_short_sizes_get_more_pairs_each_repeat_and_keep_alternating(monkeypatch):
    GiB = 1024 ** 3
    config = upload_throughput.Config(sizes=(GiB, 2 * GiB, 4 * GiB, 8 * GiB), repeats=2,
                                      wandb_check=False, sha_sample=1024 * 1024,
                                      work_dir=None, transfers=("lfs",), low_memory_check=False)
    assert [config.pairs_per_repeat(s) for s in config.sizes] == [3, 2, 1, 1]
    assert config.runs(GiB) == 6
    assert dataclasses.replace(config, short_run_factor=1).pairs_per_repeat(GiB) == 1
    order = []
    monkeypatch.setattr(upload_throughput, "run_pair",
                        lambda size, transfer, run, cfg: order.append((size // GiB, run)) or [])
    upload_throughput.measure(config)
    # each repeat runs every size, the short ones several times in turn, runs numbered on
    assert order == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (4, 0), (8, 0),
                     (1, 3), (1, 4), (1, 5), (2, 2), (2, 3), (4, 1), (8, 1)]
    assert upload_throughput.parse(["--tiny"]).short_run_factor == 1
    assert "1024 MiB: 6 pairs" in upload_throughput._short_runs(config)


def test_stream_lag_flat_and_growing():
    flat = scale.stream_result(10, [{"state": "verified", "completed_at": t, "verified_at": t + 0.5}
                                   for t in range(10)])
    assert flat.slope == pytest.approx(0.0) and flat.last_lag == flat.first_lag == 0.5
    growing = scale.stream_result(10, [{"state": "verified", "completed_at": t,
                                        "verified_at": t + 0.5 * t} for t in range(10)])
    assert growing.slope == pytest.approx(30.0)  # 0.5 s per second of stream
    assert growing.last_lag > growing.first_lag


def test_cpu_at_interpolates_between_the_samples_either_side() -> None:
    sampler = ProcessSampler.__new__(ProcessSampler)  # its samples only, no thread
    sampler.cpu_samples = [(100.0, 1.0), (100.5, 2.0), (101.0, 2.5)]
    assert sampler.cpu_at(100.25) == pytest.approx(1.5)
    assert sampler.cpu_at(100.5) == 2.0
    assert sampler.cpu_at(99.0) == 1.0 and sampler.cpu_at(200.0) == 2.5
    sampler.cpu_samples = []
    assert sampler.cpu_at(100.0) == 0.0


def test_ready_is_the_later_of_watching_and_the_first_scan() -> None:
    import json

    lines = [json.dumps({"message": "watching", "time": 1.0}), "not json",
             json.dumps({"message": "checkpoint complete", "time": 2.0})]
    assert scale.ready_at("\n".join(lines)) is None
    lines += [json.dumps({"message": "first scan done", "time": 3.0}),
              json.dumps({"message": "first scan done", "time": 9.0})]
    assert scale.ready_at("\n".join(lines)) == 3.0


def test_the_idle_window_holds_one_rescan_at_the_default_length() -> None:
    assert scale.rescans_inside(60.0) == "one rescan"
    assert scale.rescans_inside(130.0) == "2 rescans"
    assert scale.rescans_inside(2.0) == "0 rescans"
