"""Fixtures for uploader tests: one devhub per session, and HubClients that talk to it.

    devhub            the running `devhub.testing.DevHub` (faults cleared before and after)
    hub_client        a HubClient for alice, plain LFS, zero-wait retries (3 attempts)
    make_hub_client   a factory for variants: another token, policy, timeout, stop, sleep
    repo_id           a fresh repo id in alice's namespace, unique to the test
    make_local_files  writes files into a temp folder and hashes them: list[LocalFile]

Users: alice (write, member of org `medlab`), bob (write), alice's read-only token. Every
token is a canary: a test may assert it never appears in a message or a log.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

from devhub.testing import DevHub
from shared.hashing import digest_file
from uploader.errors import UploaderError
from uploader.hub import HubClient, HubConfig, LocalFile
from uploader.retry import RetryPolicy

ALICE = "alice"
BOB = "bob"
ORG = "medlab"
ALICE_TOKEN = "hf_AliceCanaryWriteToken0123456789abcd"
ALICE_READ_TOKEN = "hf_AliceCanaryReadToken0123456789abcde"
BOB_TOKEN = "hf_BobCanaryWriteToken0123456789abcdefg"
# A test hub must never hang the suite: a generous read timeout, shortened where a test needs it.
TEST_READ_TIMEOUT = 30.0
TEST_CONNECT_TIMEOUT = 5.0

HubClientFactory = Callable[..., HubClient]


@pytest.fixture(scope="session")
def _devhub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHub]:
    hub = DevHub(
        tmp_path_factory.mktemp("devhub"),
        users={ALICE: ALICE_TOKEN, BOB: BOB_TOKEN},
        read_tokens={ALICE: ALICE_READ_TOKEN},
        orgs={ORG: [ALICE]},
    )
    with hub:
        yield hub


@pytest.fixture
def devhub(_devhub_server: DevHub) -> Iterator[DevHub]:
    """The session's devhub, restarted if a test stopped it, with no fault rules left over."""
    if not _devhub_server.running:
        _devhub_server.start()
    _devhub_server.clear_faults()
    yield _devhub_server
    if _devhub_server.running:
        _devhub_server.clear_faults()


@pytest.fixture
def make_hub_client(devhub: DevHub) -> HubClientFactory:
    def make(
        token: str | Callable[[], str] = ALICE_TOKEN,
        policy: RetryPolicy | None = None,
        *,
        read_timeout: float = TEST_READ_TIMEOUT,
        connect_timeout: float = TEST_CONNECT_TIMEOUT,
        private: bool = True,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[UploaderError, int, float], None] | None = None,
    ) -> HubClient:
        provider = token if callable(token) else (lambda: token)
        config = HubConfig(endpoint=devhub.url, token_provider=provider, private=private,
                           connect_timeout=connect_timeout, read_timeout=read_timeout,
                           use_xet=False)
        return HubClient(config, policy or RetryPolicy.immediate(3), stop, sleep=sleep,
                         on_retry=on_retry)

    return make


@pytest.fixture
def hub_client(make_hub_client: HubClientFactory) -> HubClient:
    return make_hub_client()


@pytest.fixture
def repo_id(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_"))[:60]
    name = name.strip("-")
    return f"{ALICE}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_local_files(tmp_path: Path) -> Callable[[dict[str, bytes]], list[LocalFile]]:
    """Write files (repo path -> bytes) into a fresh folder and hash each once, as the
    pipeline does; returns LocalFiles sorted by path."""
    def make(files: dict[str, bytes]) -> list[LocalFile]:
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        out = []
        for rel, content in sorted(files.items()):
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            out.append(LocalFile(rel, digest_file(path), local_path=path))
        return out

    return make


@pytest.fixture
def library_bars() -> Iterator[None]:
    """start_progress turns the library's bars off; put them back as they were."""
    before = are_progress_bars_disabled()
    yield
    if not before:
        enable_progress_bars()
