"""devhub: a local, stdlib-only Hugging Face Hub server for tests, benchmarks and the demo.

Run it with `python -m devhub --data-dir DIR --user NAME:TOKEN` (see `devhub.__main__`), or from
Python with `devhub.testing.DevHub`. Fault injection rules are described in `devhub.faults`.
"""
