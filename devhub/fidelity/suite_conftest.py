"""conftest.py for huggingface_hub's suite run against devhub (copied into the scratch copy).

The sdist lacks the library's own conftest; this one provides what the selected test modules
use from it (`api`, `api_prod`, `repo_factory`, `RepoFactory`, an isolated HF cache per test, the
`xet` / `no_xet` / `production` / `deprecated` / `git_lfs` markers) with the same meaning, and
nothing else. The transfer mode comes from `DEVHUB_FIDELITY_TRANSFER`: "lfs" behaves as the
library's CI without hf_xet (tests marked `xet` skip, Xet is off), "xet" as its CI with hf_xet
(tests marked `no_xet` skip). The endpoint is `ENDPOINT_STAGING`, which the harness patched.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from typing import Any, Protocol

import huggingface_hub
import pytest
from _pytest.skipping import evaluate_skip_marks
from huggingface_hub import HfApi, RepoUrl, constants
from huggingface_hub.utils import SoftTemporaryDirectory

from .testing_constants import ENDPOINT_PRODUCTION, ENDPOINT_STAGING, TOKEN
from .testing_utils import repo_name

TRANSFER = os.environ.get("DEVHUB_FIDELITY_TRANSFER", "xet")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MARKERS = (
    "api",
    "transfer",
    "inference",
    "xet",
    "no_xet",
    "production",
    "deprecated",
    "git_lfs",
    "vcr",
)


def pytest_configure(config: pytest.Config) -> None:
    for name in MARKERS:
        config.addinivalue_line("markers", f"{name}: marker of huggingface_hub's suite")


@pytest.fixture(autouse=True)
def patch_constants(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets an empty HF home (caches, token files), as in the library's conftest."""
    with SoftTemporaryDirectory() as cache_dir:
        monkeypatch.setattr(constants, "HF_HOME", cache_dir)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", os.path.join(cache_dir, "hub"))
        monkeypatch.setattr(constants, "HF_XET_CACHE", os.path.join(cache_dir, "xet"))
        monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", os.path.join(cache_dir, "hub"))
        monkeypatch.setattr(constants, "HF_ASSETS_CACHE", os.path.join(cache_dir, "assets"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(cache_dir, "token"))
        monkeypatch.setattr(
            constants, "HF_STORED_TOKENS_PATH", os.path.join(cache_dir, "stored_tokens")
        )
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_EXPERIMENTAL_WARNING", True)
        yield


@pytest.fixture(autouse=True)
def xet_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    xet = request.node.get_closest_marker("xet") is not None
    no_xet = request.node.get_closest_marker("no_xet") is not None
    if TRANSFER == "lfs":
        if xet:
            pytest.skip("marked `xet`: this run is the LFS mode (hf_xet disabled)")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    else:
        if no_xet:
            pytest.skip("marked `no_xet`: this run is the Xet mode")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that reaches beyond devhub fails at once instead of waiting on the network."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"fidelity run: no network beyond devhub ({address})")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def production_endpoint_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("production") is not None:
        pytest.skip("marked `production`: needs huggingface.co")


@pytest.fixture(autouse=True)
def expect_deprecation_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """`@pytest.mark.deprecated("name")`: the test must emit a FutureWarning naming it."""
    names = [name for marker in request.node.iter_markers("deprecated") for name in marker.args]
    if not names or evaluate_skip_marks(request.node):
        yield
        return
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(pytest.warns(FutureWarning, match=rf".*'{name}'.*"))
        yield


@pytest.fixture(autouse=True)
def git_lfs_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("git_lfs") is not None:
        pytest.skip("git-lfs test: devhub serves no git over HTTP")


@pytest.fixture(autouse=True)
def disable_symlinks_on_windows_ci() -> None:
    """Named like the library's fixture, for tests that request it; a no-op off Windows."""
    assert huggingface_hub.__version__


@pytest.fixture(scope="session")
def api() -> HfApi:
    return HfApi(endpoint=ENDPOINT_STAGING, token=TOKEN)


@pytest.fixture(scope="session")
def api_prod() -> HfApi:
    return HfApi(endpoint=ENDPOINT_PRODUCTION)


class RepoFactory(Protocol):
    def __call__(self, repo_type: str = "model", **kwargs: Any) -> RepoUrl: ...


@pytest.fixture
def repo_factory(api: HfApi) -> Iterator[RepoFactory]:
    """Create repos for one test and delete them when it ends."""
    created: list[tuple[str, str]] = []

    def factory(repo_type: str = "model", **kwargs: Any) -> RepoUrl:
        if repo_type == "space" and "space_sdk" not in kwargs:
            kwargs["space_sdk"] = "gradio"
        kwargs.setdefault("repo_id", repo_name(prefix=repo_type))
        url = api.create_repo(repo_type=repo_type, **kwargs)
        created.append((url.repo_id, repo_type))
        return url

    yield factory
    for repo_id, repo_type in created:
        # Cleanup must not hide the test's own outcome.
        with suppress(Exception):
            api.delete_repo(repo_id=repo_id, repo_type=repo_type, missing_ok=True)
