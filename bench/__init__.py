"""Benchmarks: `python -m bench` (or `make bench`) runs the three below and prints their tables.

    bench.training_overhead   the tiny training with no uploads vs three ways of uploading
    bench.upload_throughput   the sidecar end to end vs a bare `HfApi.upload_folder`
    bench.scale               1,000 verified checkpoints at start-up; a checkpoint every second

Every figure is a ratio against a baseline measured in the same run, with the variants
interleaved and repeated, and medians reported: the machine is shared and noisy. Each script
takes `--tiny` for a seconds-long smoke run (tests/bench) and prints its table last.
"""
