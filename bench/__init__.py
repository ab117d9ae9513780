"""Benchmarks: `python -m bench` (or `make bench`) runs the three below and prints their tables.

    bench.training_overhead   the tiny training with no uploads vs three ways of uploading, and
                              the sidecar with the second core busy vs no uploads under that load
    bench.upload_throughput   the sidecar end to end vs a bare `HfApi.upload_folder` (rate, CPU
                              per GiB, RSS), and the time to first byte from the same runs
    bench.scale               10,000 verified checkpoints: `watch` start-up and idle CPU,
                              `status`; a checkpoint every second

Every ratio is against a baseline measured in the same run, with the variants interleaved and
repeated, and medians reported: the machine is shared and noisy. Each script takes `--tiny` for
a seconds-long smoke run (tests/bench) and prints its table(s) last.
"""
