"""tests/containers runs only through `make containers`, which sets CKPT_CONTAINERS=1.

It starts a Docker engine of its own, builds both images and runs the compose setup (about ten
minutes), so `make test` (plain pytest) never collects it.
"""

from __future__ import annotations

import os

import pytest

collect_ignore_glob = [] if os.environ.get("CKPT_CONTAINERS") == "1" else ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "containers: real Docker containers (make containers, tests/containers)")
