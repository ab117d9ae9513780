"""Fixtures for devhub tests: one shared devhub process, a client per user, unique repo names."""

import os

# Must happen before huggingface_hub is imported anywhere in the test session.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"  # no version check against pypi.org

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub

USERS = {"alice": "hf_alice_write", "bob": "hf_bob_write"}
READ_TOKENS = {"alice": "hf_alice_read", "carol": "hf_carol_read"}
ORGS = {"acme": ["alice"]}
# Small enough that the tests' 64 MB file goes multipart and their 12 MB file does not.
CHUNK_SIZE = 16 * 1024 * 1024


def make_hub(data_dir: Path, **kwargs: Any) -> DevHub:
    kwargs.setdefault("multipart_chunk_size", CHUNK_SIZE)
    return DevHub(data_dir, users=USERS, read_tokens=READ_TOKENS, orgs=ORGS, **kwargs)


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHub]:
    with make_hub(tmp_path_factory.mktemp("devhub")) as running:
        yield running


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test whose process tries to open a connection beyond 127.0.0.1."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise AssertionError(f"a devhub test tried to reach {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "hub" in request.fixturenames:
        hub = request.getfixturevalue("hub")
        if hub.running:
            hub.clear_faults()


@pytest.fixture
def alice(hub: DevHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=USERS["alice"])


@pytest.fixture
def bob(hub: DevHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=USERS["bob"])


@pytest.fixture
def repo_id() -> str:
    """A fresh repo name in alice's namespace."""
    return f"alice/repo-{uuid.uuid4().hex[:10]}"


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The client itself triggers this httpx2 deprecation on LFS uploads; it is not ours to fix."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(
                pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
            )
