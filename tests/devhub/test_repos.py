"""Repo-level calls through the real client: whoami, create/delete, info, exists, list, commits."""

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils._pagination import paginate

from devhub.testing import DevHub

from .conftest import READ_TOKENS, USERS

COMMIT_RE = r"^[0-9a-f]{40}$"


def test_whoami_reports_name_role_and_orgs(hub: DevHub, alice: HfApi) -> None:
    me = alice.whoami()
    assert me["name"] == "alice"
    assert me["type"] == "user"
    assert [org["name"] for org in me["orgs"]] == ["acme"]
    assert me["auth"]["accessToken"]["role"] == "write"
    reader = HfApi(endpoint=hub.url, token=READ_TOKENS["alice"]).whoami()
    assert reader["name"] == "alice"
    assert reader["auth"]["accessToken"]["role"] == "read"


def test_whoami_with_a_bad_token_is_401(hub: DevHub) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_not_a_token").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_private_and_public(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    url = alice.create_repo(repo_id, private=True)
    assert url == f"{hub.url}/{repo_id}"
    assert url.repo_id == repo_id
    assert alice.model_info(repo_id).private is True
    public = alice.create_repo(repo_id + "-pub")
    assert alice.model_info(public.repo_id).private is False
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert anonymous.repo_exists(public.repo_id)
    assert not anonymous.repo_exists(repo_id)


def test_create_repo_in_own_namespace_by_default(alice: HfApi, repo_id: str) -> None:
    url = alice.create_repo(repo_id.split("/")[1])
    assert url.repo_id == repo_id


def test_create_repo_twice_is_409_with_url_and_exist_ok_passes(
    hub: DevHub, alice: HfApi, repo_id: str
) -> None:
    alice.create_repo(repo_id)
    with pytest.raises(HfHubHTTPError) as err:
        alice.create_repo(repo_id)
    assert err.value.response.status_code == 409
    assert err.value.response.json()["url"] == f"{hub.url}/{repo_id}"
    assert alice.create_repo(repo_id, exist_ok=True).repo_id == repo_id


def test_new_repo_has_an_initial_commit_with_gitattributes(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    info = alice.model_info(repo_id)
    assert info.sha is not None
    assert len(info.sha) == 40 and int(info.sha, 16) >= 0
    assert [s.rfilename for s in info.siblings or []] == [".gitattributes"]
    commits = alice.list_repo_commits(repo_id)
    assert [c.commit_id for c in commits] == [info.sha]
    assert commits[0].authors == ["system"]
    assert commits[0].title == "initial commit"


def test_repo_info_and_exists(alice: HfApi, repo_id: str) -> None:
    assert not alice.repo_exists(repo_id)
    alice.create_repo(repo_id)
    assert alice.repo_exists(repo_id)
    info = alice.repo_info(repo_id)
    assert info.id == repo_id
    assert info.sha == alice.model_info(repo_id, revision="main").sha
    assert alice.model_info(repo_id, revision=info.sha).sha == info.sha


def test_unknown_revision_is_revision_not_found(alice: HfApi, repo_id: str) -> None:
    from huggingface_hub.errors import RevisionNotFoundError

    alice.create_repo(repo_id)
    with pytest.raises(RevisionNotFoundError):
        alice.model_info(repo_id, revision="no-such-branch")


def test_delete_repo(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    alice.delete_repo(repo_id)
    assert not alice.repo_exists(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        alice.delete_repo(repo_id)
    alice.delete_repo(repo_id, missing_ok=True)
    alice.create_repo(repo_id)  # the name is free again, with a fresh history
    assert len(alice.list_repo_commits(repo_id)) == 1


def test_list_models_by_author_and_search(hub: DevHub, alice: HfApi, bob: HfApi) -> None:
    alice.create_repo("alice/listing-alpha")
    alice.create_repo("alice/listing-beta", private=True)
    bob.create_repo("bob/listing-alpha")
    ids = {m.id for m in alice.list_models(author="alice", search="listing")}
    assert ids == {"alice/listing-alpha", "alice/listing-beta"}
    assert {m.id for m in alice.list_models(search="listing-alpha")} == {
        "alice/listing-alpha",
        "bob/listing-alpha",
    }
    # bob does not see alice's private repo
    assert {m.id for m in bob.list_models(author="alice", search="listing")} == {
        "alice/listing-alpha"
    }


def test_list_models_paginates_with_link(hub: DevHub, alice: HfApi) -> None:
    names = {f"alice/page-{i}" for i in range(5)}
    for name in names:
        alice.create_repo(name)
    headers = {"authorization": f"Bearer {USERS['alice']}"}
    first = httpx.get(
        f"{hub.url}/api/models", params={"search": "alice/page-", "limit": 2}, headers=headers
    )
    assert len(first.json()) == 2
    assert first.links["next"]["url"].startswith(f"{hub.url}/api/models?")
    pages = list(paginate(f"{hub.url}/api/models", {"search": "alice/page-", "limit": 2}, headers))
    assert {item["id"] for item in pages} == names


def test_urls_follow_the_host_header(hub: DevHub, repo_id: str) -> None:
    """Behind a proxy or port forward, every URL handed out uses the Host the client used."""
    headers = {"authorization": f"Bearer {USERS['alice']}", "host": "hub.proxy.test:8443"}
    name = repo_id.split("/")[1]
    created = httpx.post(f"{hub.url}/api/repos/create", json={"name": name}, headers=headers)
    assert created.json()["url"] == f"http://hub.proxy.test:8443/{repo_id}"
    batch = httpx.post(
        f"{hub.url}/{repo_id}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": "a" * 64, "size": 3}],
        },
        headers=headers,
    )
    actions = batch.json()["objects"][0]["actions"]
    assert actions["upload"]["href"].startswith("http://hub.proxy.test:8443/")
    assert actions["verify"]["href"].startswith("http://hub.proxy.test:8443/")
    for i in range(3):
        httpx.post(f"{hub.url}/api/repos/create", json={"name": f"{name}-{i}"}, headers=headers)
    page = httpx.get(f"{hub.url}/api/models", params={"search": name, "limit": 1}, headers=headers)
    assert page.links["next"]["url"].startswith("http://hub.proxy.test:8443/api/models?")


def test_list_repo_refs(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    refs = alice.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"]
    assert refs.branches[0].target_commit == alice.model_info(repo_id).sha
