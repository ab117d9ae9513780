"""Permissions as the Hub enforces them, seen through the client's exceptions."""

from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from devhub.testing import DevHub

from .conftest import READ_TOKENS


@pytest.fixture
def private_repo(alice: HfApi, repo_id: str) -> str:
    alice.create_repo(repo_id, private=True)
    alice.create_commit(repo_id, [CommitOperationAdd("f.txt", b"private")], commit_message="f")
    return repo_id


@pytest.fixture
def public_repo(alice: HfApi, repo_id: str) -> str:
    public = repo_id + "-public"
    alice.create_repo(public)
    alice.create_commit(public, [CommitOperationAdd("f.txt", b"public")], commit_message="f")
    return public


def _status(err: pytest.ExceptionInfo[HfHubHTTPError]) -> int:
    return err.value.response.status_code


def test_other_users_private_repo_is_not_found(
    hub: DevHub, bob: HfApi, private_repo: str, tmp_path
) -> None:
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info(private_repo)
    assert not bob.repo_exists(private_repo)
    with pytest.raises(RepositoryNotFoundError):
        bob.list_repo_files(private_repo)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            private_repo, "f.txt", endpoint=hub.url, token=bob.token, cache_dir=tmp_path
        )
    with pytest.raises(RepositoryNotFoundError):
        bob.delete_repo(private_repo)
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(private_repo)


def test_public_repo_is_readable_by_anyone(hub: DevHub, public_repo: str, tmp_path) -> None:
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert anonymous.model_info(public_repo).id == public_repo
    path = hf_hub_download(public_repo, "f.txt", endpoint=hub.url, token=False, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"public"


def test_missing_token_cannot_write(hub: DevHub, public_repo: str) -> None:
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_commit(public_repo, [CommitOperationAdd("x", b"x")], commit_message="x")
    assert _status(err) == 401
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo("alice/anon-created")
    assert _status(err) == 401


def test_bad_token_is_401_even_for_public_reads(hub: DevHub, public_repo: str) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_wrong").model_info(public_repo)
    assert _status(err) == 401


def test_writing_into_another_namespace_is_403(bob: HfApi, public_repo: str) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_commit(public_repo, [CommitOperationAdd("x", b"x")], commit_message="x")
    assert _status(err) == 403
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_repo("alice/bobs-repo")
    assert _status(err) == 403
    with pytest.raises(HfHubHTTPError) as err:
        bob.delete_repo(public_repo)
    assert _status(err) == 403


def test_create_repo_checks_namespace_before_existence(bob: HfApi, private_repo: str) -> None:
    """A 403, not a 409: the name of alice's private repo must not leak."""
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_repo(private_repo)
    assert _status(err) == 403


def test_read_token_cannot_write_but_can_read(hub: DevHub, private_repo: str) -> None:
    reader = HfApi(endpoint=hub.url, token=READ_TOKENS["alice"])
    assert reader.list_repo_files(private_repo) == [".gitattributes", "f.txt"]
    with pytest.raises(HfHubHTTPError) as err:
        reader.create_commit(private_repo, [CommitOperationAdd("x", b"x")], commit_message="x")
    assert _status(err) == 403
    with pytest.raises(HfHubHTTPError) as err:
        reader.create_repo("alice/from-read-token")
    assert _status(err) == 403
    carol = HfApi(endpoint=hub.url, token=READ_TOKENS["carol"])
    with pytest.raises(HfHubHTTPError) as err:
        carol.create_repo("carol/own-namespace")
    assert _status(err) == 403


def test_org_members_write_to_the_org(alice: HfApi, bob: HfApi) -> None:
    url = alice.create_repo("acme/shared-model", private=True, exist_ok=True)
    assert url.repo_id == "acme/shared-model"
    alice.create_commit("acme/shared-model", [CommitOperationAdd("x", b"x")], commit_message="x")
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info("acme/shared-model")
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_repo("acme/bobs")
    assert _status(err) == 403
