"""HubClient against devhub over HTTP, with the real huggingface_hub client and injected faults."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

from devhub.testing import DevHub
from shared.hashing import digest_file
from shared.layout import Kind
from shared.manifest import MANIFEST_FILENAME, Manifest, ManifestError, ManifestFile
from tests.uploader.conftest import (
    ALICE_READ_TOKEN,
    ALICE_TOKEN,
    BOB_TOKEN,
    ORG,
    HubClientFactory,
)
from uploader.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RateLimitedError,
    StagingError,
    TransientError,
    UploaderError,
)
from uploader.hub import HubClient, LocalFile, _operation
from uploader.retry import RetryPolicy
from uploader.verify import verify_commit

LocalFilesFactory = Callable[[dict[str, bytes]], list[LocalFile]]
LFS_SIZE = 11 * 1024 * 1024  # above the 10 MiB line where the Hub switches to LFS
STALL_DEADLINE_S = 10.0
WRONG_TOKEN = "hf_WrongCanaryToken0123456789abcdefgh"


def requests_to(devhub: DevHub, method: str, path_part: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in devhub.log()[since:] if e["method"] == method and path_part in e["path"]]


def commit_count(devhub: DevHub, repo_id: str) -> int:
    return len(HfApi(endpoint=devhub.url).list_repo_commits(repo_id, token=ALICE_TOKEN))


def small_checkpoint(make_local_files: LocalFilesFactory) -> list[LocalFile]:
    return make_local_files({"adapter_config.json": b'{"r": 8}\n',
                             "adapter_model.safetensors": os.urandom(4096)})


# ---- commit and read back ---------------------------------------------------------------


def test_commit_folder_with_lfs_file_verifies_and_reports_local_hashes(
        devhub: DevHub, hub_client: HubClient, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    files = make_local_files({
        "adapter_config.json": b'{"r": 8, "lora_alpha": 16}\n',
        "README.txt": b"hello\n" * 100,
        "nested/tokenizer_config.json": b'{"pad": "<pad>"}\n',
        "empty.txt": b"",
        "adapter_model.safetensors": os.urandom(LFS_SIZE),
    })
    hub_client.ensure_repo(repo_id)
    sha = hub_client.commit(repo_id, files, "checkpoint 50")
    assert len(sha) == 40 and int(sha, 16) >= 0
    assert hub_client.head_sha(repo_id) == sha
    verify_commit(hub_client, repo_id, sha, files)

    paths = [f.path_in_repo for f in files]
    for remote in (hub_client.list_files(repo_id), hub_client.list_files(repo_id, sha),
                   hub_client.paths_info(repo_id, sha, paths)):
        for local in files:
            got = remote[local.path_in_repo]
            assert got.size == local.digest.size
            if got.is_lfs:
                assert got.sha256 == local.digest.sha256 and got.git_sha1 is None
            else:
                assert got.git_sha1 == local.digest.git_sha1 and got.sha256 is None
        assert remote["adapter_model.safetensors"].is_lfs
        assert not remote["adapter_config.json"].is_lfs
    assert ".gitattributes" in hub_client.list_files(repo_id)
    assert len(requests_to(devhub, "POST", f"/api/models/{repo_id}/commit/")) == 1


def test_recommitting_the_same_files_posts_no_commit_and_returns_the_head(
        devhub: DevHub, hub_client: HubClient, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    files = small_checkpoint(make_local_files)
    hub_client.ensure_repo(repo_id)
    sha = hub_client.commit(repo_id, files, "first")
    assert hub_client.commit(repo_id, files, "again") == sha
    assert len(requests_to(devhub, "POST", f"/api/models/{repo_id}/commit/")) == 1


def test_lfs_commit_uses_the_callers_hash_and_refuses_a_changed_file(
        make_local_files: LocalFilesFactory) -> None:
    (local,) = make_local_files({"weights.bin": os.urandom(1000)})
    operation = _operation(local, declare_hash=True)
    assert operation.upload_info.is_hashed  # no second read of the file for its sha256
    assert operation.upload_info.sha256.hex() == local.digest.sha256
    assert local.local_path is not None
    local.local_path.write_bytes(os.urandom(1001))  # changed after it was hashed
    with pytest.raises(StagingError, match="changed since it was hashed"):
        _operation(local, declare_hash=True)


def test_xet_commit_leaves_the_sha256_to_the_bytes_read(
        make_local_files: LocalFilesFactory) -> None:
    # hf_xet then computes it from what it uploads: the Hub's sha256 checks ours, not echoes it.
    (local,) = make_local_files({"weights.bin": os.urandom(1000)})
    assert not _operation(local, declare_hash=False).upload_info.is_hashed


def test_local_file_needs_exactly_one_source(make_local_files: LocalFilesFactory) -> None:
    (local,) = make_local_files({"a.txt": b"a"})
    with pytest.raises(ValueError, match="exactly one"):
        LocalFile("a.txt", local.digest, local_path=local.local_path, data=b"a")
    with pytest.raises(ValueError, match="exactly one"):
        LocalFile("a.txt", local.digest)


def test_repo_lifecycle_private_listing_and_download(
        devhub: DevHub, hub_client: HubClient, repo_id: str, tmp_path: Path,
        make_local_files: LocalFilesFactory) -> None:
    assert hub_client.repo_url(repo_id) == f"{devhub.url}/{repo_id}"
    assert not hub_client.repo_exists(repo_id)
    hub_client.ensure_repo(repo_id)
    hub_client.ensure_repo(repo_id)  # exist_ok
    assert hub_client.repo_exists(repo_id)
    assert HfApi(endpoint=devhub.url).model_info(repo_id, token=ALICE_TOKEN).private
    assert not HfApi(endpoint=devhub.url).repo_exists(repo_id, token=False)  # hidden to others
    name = repo_id.split("/")[1]
    assert hub_client.list_repos("alice", name) == [repo_id]

    files = small_checkpoint(make_local_files)
    sha = hub_client.commit(repo_id, files, "first")
    path = hub_client.download(repo_id, sha, "adapter_config.json", tmp_path / "dl")
    assert path == tmp_path / "dl" / "adapter_config.json"
    assert digest_file(path) == files[0].digest

    hub_client.delete_repo(repo_id)
    hub_client.delete_repo(repo_id)  # already gone: fine
    assert not hub_client.repo_exists(repo_id)
    assert hub_client.list_repos("alice", name) == []


def manifest_for(files: list[LocalFile]) -> Manifest:
    return Manifest(run_id="run-1", step=50, kind=Kind.CHECKPOINT,
                    files=tuple(ManifestFile(f.path_in_repo, f.digest.size, f.digest.sha256)
                                for f in files),
                    source_host="host", folder="checkpoint-50", created_at="2025-01-01T00:00:00Z")


def test_read_manifest(hub_client: HubClient, repo_id: str,
                       make_local_files: LocalFilesFactory) -> None:
    assert hub_client.read_manifest(repo_id) is None  # no repo
    hub_client.ensure_repo(repo_id)
    assert hub_client.read_manifest(repo_id) is None  # no file
    files = small_checkpoint(make_local_files)
    manifest = manifest_for(files)
    (manifest_file,) = make_local_files({MANIFEST_FILENAME: manifest.to_bytes()})
    sha = hub_client.commit(repo_id, [*files, manifest_file], "with manifest")
    assert hub_client.read_manifest(repo_id) == manifest
    assert hub_client.read_manifest(repo_id, sha) == manifest
    (broken,) = make_local_files({MANIFEST_FILENAME: b'{"step": "not a manifest"}'})
    hub_client.commit(repo_id, [broken], "broken manifest")
    with pytest.raises(ManifestError):
        hub_client.read_manifest(repo_id)
    assert hub_client.read_manifest(repo_id, sha) == manifest  # the old commit still has it


# ---- transient faults are retried ---------------------------------------------------------


def test_503_burst_on_create_repo_is_retried_into_one_repo(
        devhub: DevHub, make_hub_client: HubClientFactory, repo_id: str) -> None:
    retries: list[tuple[str, int]] = []
    hub = make_hub_client(policy=RetryPolicy.immediate(4),
                          on_retry=lambda e, n, w: retries.append((type(e).__name__, n)))
    devhub.add_faults({"action": "status", "status": 503, "method": "POST",
                       "path": "^/api/repos/create$", "times": 3})
    before = len(devhub.log())
    hub.ensure_repo(repo_id)
    assert retries == [("TransientError", 1), ("TransientError", 2), ("TransientError", 3)]
    creates = requests_to(devhub, "POST", "/api/repos/create", before)
    assert [e["status"] for e in creates] == [503, 503, 503, 200]
    assert hub.list_repos("alice", repo_id.split("/")[1]) == [repo_id]


def test_503_burst_on_the_commit_post_is_retried_into_one_commit(
        devhub: DevHub, make_hub_client: HubClientFactory, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    hub = make_hub_client(policy=RetryPolicy.immediate(4))
    hub.ensure_repo(repo_id)
    initial = commit_count(devhub, repo_id)
    devhub.add_faults({"action": "status", "status": 503, "method": "POST",
                       "path": f"^/api/models/{repo_id}/commit/main$", "times": 3})
    files = small_checkpoint(make_local_files)
    sha = hub.commit(repo_id, files, "checkpoint")
    assert commit_count(devhub, repo_id) == initial + 1
    verify_commit(hub, repo_id, sha, files)
    commits = requests_to(devhub, "POST", f"/api/models/{repo_id}/commit/")
    assert [e["status"] for e in commits] == [503, 503, 503, 200]


def test_503_burst_longer_than_the_round_raises_transient(
        devhub: DevHub, make_hub_client: HubClientFactory, repo_id: str) -> None:
    hub = make_hub_client(policy=RetryPolicy.immediate(2))
    devhub.add_faults({"action": "status", "status": 503, "method": "POST",
                       "path": "^/api/repos/create$", "times": 3})
    with pytest.raises(TransientError, match="503"):
        hub.ensure_repo(repo_id)
    hub.ensure_repo(repo_id)  # the next round meets the third 503, then succeeds
    assert hub.repo_exists(repo_id)


@pytest.mark.parametrize(("headers", "wait"), [({"retry_after": 7}, 7.0),
                                               ({"ratelimit": 42}, 42.0)])
def test_429_waits_the_announced_time(devhub: DevHub, make_hub_client: HubClientFactory,
                                      repo_id: str, headers: dict[str, int],
                                      wait: float) -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=3, initial_wait=1.0, max_wait=30.0, jitter=1.0)
    hub = make_hub_client(policy=policy, sleep=waits.append)
    devhub.add_faults({"action": "status", "status": 429, "method": "POST",
                       "path": "^/api/repos/create$", "times": 1, **headers})
    hub.ensure_repo(repo_id)
    assert waits == [wait]
    assert hub.repo_exists(repo_id)


def test_stop_interrupts_a_long_rate_limit_wait(devhub: DevHub,
                                                make_hub_client: HubClientFactory,
                                                repo_id: str) -> None:
    stop = threading.Event()
    # Shutdown is requested just as the uploader starts a 50-minute wait (real sleep).
    hub = make_hub_client(policy=RetryPolicy(attempts=5), stop=stop,
                          on_retry=lambda e, n, w: stop.set())
    devhub.add_faults({"action": "status", "status": 429, "method": "POST",
                       "path": "^/api/repos/create$", "retry_after": 3000})
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        hub.ensure_repo(repo_id)
    assert time.monotonic() - started < STALL_DEADLINE_S
    assert info.value.wait_seconds == 3000


def test_reset_in_the_middle_of_an_lfs_put_is_retried(
        devhub: DevHub, hub_client: HubClient, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    files = make_local_files({"config.json": b"{}\n",
                              "adapter_model.safetensors": os.urandom(LFS_SIZE)})
    hub_client.ensure_repo(repo_id)
    (rule,) = devhub.add_faults({"action": "reset", "when": "mid_body", "method": "PUT",
                                 "times": 1})
    sha = hub_client.commit(repo_id, files, "checkpoint")
    verify_commit(hub_client, repo_id, sha, files)
    (fired,) = [r for r in devhub.faults() if r["id"] == rule["id"]]
    assert fired["hits"] == 1
    assert len(requests_to(devhub, "PUT", "")) >= 2


def test_stalled_commit_post_times_out_then_succeeds(
        devhub: DevHub, make_hub_client: HubClientFactory, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    hub = make_hub_client(policy=RetryPolicy.immediate(1), read_timeout=1.0)
    hub.ensure_repo(repo_id)
    devhub.add_faults({"action": "stall", "method": "POST", "seconds": 30,
                       "path": f"^/api/models/{repo_id}/commit/main$", "times": 1})
    files = small_checkpoint(make_local_files)
    started = time.monotonic()
    with pytest.raises(TransientError, match="Timeout"):
        hub.commit(repo_id, files, "checkpoint")
    assert time.monotonic() - started < STALL_DEADLINE_S
    sha = hub.commit(repo_id, files, "checkpoint")  # the stall rule is spent
    verify_commit(hub, repo_id, sha, files)


def test_stalled_commit_is_retried_within_one_call(
        devhub: DevHub, make_hub_client: HubClientFactory, repo_id: str,
        make_local_files: LocalFilesFactory) -> None:
    hub = make_hub_client(policy=RetryPolicy.immediate(2), read_timeout=1.0)
    hub.ensure_repo(repo_id)
    devhub.add_faults({"action": "stall", "method": "POST", "seconds": 30,
                       "path": f"^/api/models/{repo_id}/commit/main$", "times": 1})
    files = small_checkpoint(make_local_files)
    verify_commit(hub, repo_id, hub.commit(repo_id, files, "checkpoint"), files)


# ---- permanent errors are not retried -----------------------------------------------------


def test_rejected_token_is_an_auth_error_without_retries(
        devhub: DevHub, make_hub_client: HubClientFactory, repo_id: str) -> None:
    hub = make_hub_client(WRONG_TOKEN, policy=RetryPolicy.immediate(5))
    before = len(devhub.log())
    with pytest.raises(AuthError) as info:
        hub.whoami()
    assert "rejected" in str(info.value) and devhub.url in str(info.value)
    assert "HF_TOKEN" in (info.value.hint or "")
    assert len(requests_to(devhub, "GET", "/api/whoami-v2", before)) == 1
    with pytest.raises(AuthError):
        hub.ensure_repo(repo_id)
    assert len(requests_to(devhub, "POST", "/api/repos/create", before)) == 1
    for error in (info.value,):
        assert WRONG_TOKEN not in str(error) and WRONG_TOKEN not in error.one_line()


def test_whoami_is_called_once_and_cached(devhub: DevHub, hub_client: HubClient) -> None:
    before = len(devhub.log())
    identity = hub_client.whoami()
    assert (identity.name, identity.role, identity.orgs) == ("alice", "write", (ORG,))
    assert hub_client.whoami() is identity
    hub_client.check_write_access("alice")
    hub_client.check_write_access(ORG)
    assert len(requests_to(devhub, "GET", "/api/whoami-v2", before)) == 1


def test_read_only_token_is_refused_at_startup(make_hub_client: HubClientFactory,
                                               repo_id: str) -> None:
    hub = make_hub_client(ALICE_READ_TOKEN)
    assert hub.whoami().role == "read"
    with pytest.raises(AuthError, match="read-only") as info:
        hub.check_write_access("alice")
    assert "write" in (info.value.hint or "")
    with pytest.raises(AuthError, match="read-only"):  # and the server agrees
        hub.ensure_repo(repo_id)


def test_foreign_namespace_is_refused(make_hub_client: HubClientFactory) -> None:
    hub = make_hub_client()
    with pytest.raises(AuthError, match="namespace 'bob'") as info:
        hub.check_write_access("bob")
    assert "HUB_NAMESPACE" in (info.value.hint or "")
    with pytest.raises(AuthError, match="namespace"):  # and the server agrees
        hub.ensure_repo("bob/not-yours")
    make_hub_client(BOB_TOKEN).check_write_access("bob")


@pytest.mark.parametrize(("bad", "sent"), [
    ("alice/bad--name", 0),  # the client refuses it before sending
    ("alice/" + "x" * 97, 0),
])
def test_invalid_repo_name_is_permanent(devhub: DevHub, hub_client: HubClient, bad: str,
                                        sent: int) -> None:
    before = len(devhub.log())
    with pytest.raises(PermanentError) as info:
        hub_client.ensure_repo(bad)
    assert not isinstance(info.value, AuthError)
    assert "\n" not in str(info.value)
    creates = requests_to(devhub, "POST", "/api/repos/create", before)
    assert [e["status"] for e in creates] == [400] * sent


def test_rotated_token_takes_effect_without_a_restart(
        make_hub_client: HubClientFactory, repo_id: str) -> None:
    current = [WRONG_TOKEN]
    hub = make_hub_client(lambda: current[0])
    with pytest.raises(AuthError):
        hub.ensure_repo(repo_id)
    current[0] = ALICE_TOKEN  # the secret file was rotated
    hub.ensure_repo(repo_id)
    assert hub.repo_exists(repo_id)


def test_unreadable_token_is_a_config_error(make_hub_client: HubClientFactory) -> None:
    def broken() -> str:
        raise OSError("HF_TOKEN_FILE=/run/secrets/hf cannot be read")

    with pytest.raises(ConfigError, match="cannot read the Hub token"):
        make_hub_client(broken).whoami()

    def refused() -> str:  # the service's provider raises ConfigError with its own hint
        raise ConfigError("HF_TOKEN_FILE=/x is empty", "write the token into it")

    with pytest.raises(ConfigError, match="is empty") as info:
        make_hub_client(refused).ensure_repo("alice/whatever")
    assert info.value.hint == "write the token into it"


def test_token_never_appears_in_errors(devhub: DevHub, make_hub_client: HubClientFactory,
                                       repo_id: str, make_local_files: LocalFilesFactory) -> None:
    """A server that echoes the token back in its error messages still cannot leak it."""
    errors: list[UploaderError] = []
    hub = make_hub_client(policy=RetryPolicy.immediate(2))
    for status in (500, 400, 403):
        devhub.add_faults({"action": "status", "status": status,
                           "message": f"bad Authorization: Bearer {ALICE_TOKEN} ({ALICE_TOKEN})"})
        with pytest.raises(UploaderError) as info:
            hub.ensure_repo(repo_id)
        errors.append(info.value)
        devhub.clear_faults()
    hub.ensure_repo(repo_id)
    # 403, not 5xx: huggingface_hub retries LFS PUTs itself, sleeping for real.
    devhub.add_faults({"action": "status", "status": 403, "method": "PUT",
                       "message": f"storage says {ALICE_TOKEN}"})
    with pytest.raises(UploaderError) as info:
        hub.commit(repo_id, small_checkpoint(make_local_files), "x")
    errors.append(info.value)
    with pytest.raises(AuthError) as auth:
        make_hub_client(WRONG_TOKEN).whoami()
    errors.append(auth.value)
    for error in errors:
        for text in (str(error), error.one_line(), repr(error)):
            assert ALICE_TOKEN not in text and WRONG_TOKEN not in text
