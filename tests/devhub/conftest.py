"""Fixtures for devhub tests: one shared devhub process, a client per user, unique repo names.

Xet or LFS is chosen per test through `huggingface_hub.constants.HF_HUB_DISABLE_XET` (read at
call time): LFS unless the test takes the `transfer` fixture (both, "xet" and "lfs") or `xet`.
Nothing here touches the process environment at import: the whole suite imports this module
during collection, and other modules' tests must see the environment they expect.
"""

import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.utils import _xet as hf_xet_glue

from devhub.testing import DevHub
from devhub.xet import STORAGE_PREFIX

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


TRANSFERS = ("xet", "lfs")


@pytest.fixture(scope="module", params=TRANSFERS)
def transfer(request: pytest.FixtureRequest) -> Iterator[str]:
    """ "xet" or "lfs": how the real client uploads (module-scoped, so fixtures can upload once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_DISABLE_XET", request.param == "lfs")
        yield request.param


# hf_xet reads these when its session is created: retry storage failures within a second or two
# instead of its 3 s doubling over up to 6 minutes.
XET_FAST_RETRIES = {
    "HF_XET_CLIENT_RETRY_BASE_DELAY": "50ms",
    "HF_XET_CLIENT_RETRY_MAX_DURATION": "20s",
}


@pytest.fixture(autouse=True)
def _transfer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """LFS for every test unless it asks for `transfer` (or `xet`, which sets it after this)."""
    xet = "transfer" in request.fixturenames and request.getfixturevalue("transfer") == "xet"
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
    if xet:
        _fresh_xet_session(monkeypatch)


@pytest.fixture
def xet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client uploads and downloads through Xet (hf_xet), as it does by default."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    _fresh_xet_session(monkeypatch)


def _fresh_xet_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's hf_xet session, created with the fast retries; both undone after the test.

    huggingface_hub keeps one hf_xet session per process and hf_xet reads its settings when the
    session is created, so the settings need a session of their own.
    """
    for name, value in XET_FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hf_xet_glue, "_GLOBAL_XET_HOLDER", hf_xet_glue.XetSessionHolder())


def storage_calls(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request-log entries of Xet storage requests (under devhub.xet.STORAGE_PREFIX)."""
    return [e for e in entries if e["path"].startswith(STORAGE_PREFIX + "/")]


def forget_xet_shard_cache() -> None:
    """Drop hf_xet's client-side shard cache, so the next upload sends its xorbs again.

    hf_xet skips xorbs its cache says the server holds; it rereads the cache on each upload.
    """
    for cache in Path(constants.HF_XET_CACHE).glob("*/shard-cache"):
        shutil.rmtree(cache, ignore_errors=True)


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
