"""Hub behaviours huggingface_hub's own suite found devhub lacking (see devhub.fidelity)."""

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError

from devhub.gitignore import is_ignored, parse
from devhub.testing import DevHub

from .conftest import USERS


@pytest.mark.parametrize(
    ("rules", "path", "ignored"),
    [
        ("nested/*\n", "nested/a.txt", True),
        ("nested/*\n", "x/nested/a.txt", False),  # a "/" inside anchors the pattern
        ("*.log\n", "deep/er/x.log", True),
        ("*.log\n!keep.log\n", "keep.log", False),
        ("build/\n", "build", False),  # folder-only pattern, "build" is a file here
        ("build/\n", "build/out.bin", True),
        ("**/cache\n", "a/b/cache/x", True),
        ("# comment\n\n", "anything", False),
    ],
)
def test_gitignore_rules(rules: str, path: str, ignored: bool) -> None:
    assert is_ignored(parse(rules), path) is ignored


def test_leading_underscore_names_and_case_insensitive_ids(tmp_path) -> None:
    with DevHub(tmp_path / "hub", users={"__dummy__": "hf_d"}) as hub:
        api = HfApi(endpoint=hub.url, token="hf_d")
        repo_id = api.create_repo("__dummy__/Repo_X").repo_id
        api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=repo_id.lower())
        assert api.model_info("__DUMMY__/repo_x").id == "__dummy__/Repo_X"
        with pytest.raises(HfHubHTTPError) as conflict:
            api.create_repo("__dummy__/REPO_X")
        assert conflict.value.response.status_code == 409


def test_unknown_routes_are_repo_not_found_with_request_ids(hub: DevHub) -> None:
    answer = httpx.get(f"{hub.url}/api/models/alice/nope/no-such-route")
    assert answer.status_code == 404
    assert answer.headers["X-Error-Code"] == "RepoNotFound"
    assert answer.headers["X-Request-Id"]


def test_branches(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    first = alice.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=repo_id).oid
    alice.create_branch(repo_id, branch="dev")
    alice.upload_file(path_or_fileobj=b"2", path_in_repo="a.txt", repo_id=repo_id, revision="dev")
    assert alice.list_repo_commits(repo_id, revision="dev")[1].commit_id == first
    assert alice.list_repo_commits(repo_id)[0].commit_id == first
    with pytest.raises(HfHubHTTPError) as exists:
        alice.create_branch(repo_id, branch="dev")
    assert exists.value.response.status_code == 409
    alice.create_branch(repo_id, branch="dev", exist_ok=True)
    alice.delete_branch(repo_id, branch="dev")
    assert [b.name for b in alice.list_repo_refs(repo_id).branches] == ["main"]


def test_last_commits_and_folder_delete_by_path(alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    ops = [CommitOperationAdd("d/a.txt", b"a"), CommitOperationAdd("b.txt", b"b")]
    alice.create_commit(repo_id, ops, commit_message="one")
    alice.create_commit(repo_id, [CommitOperationAdd("b.txt", b"B")], commit_message="two")
    infos = {
        i.path: i for i in alice.get_paths_info(repo_id, ["d", "d/a.txt", "b.txt"], expand=True)
    }
    assert {p: i.last_commit.title for p, i in infos.items()} == {
        "d": "one",
        "d/a.txt": "one",
        "b.txt": "two",
    }
    tree = {e.path: e for e in alice.list_repo_tree(repo_id, expand=True)}
    assert tree[".gitattributes"].last_commit.title == "initial commit"
    # A delete without a trailing "/" is sent as a file; the Hub deletes the folder it names.
    alice.create_commit(repo_id, [CommitOperationDelete("d")], commit_message="rm")
    assert alice.list_repo_files(repo_id) == [".gitattributes", "b.txt"]


def test_preupload_honours_the_repo_gitignore(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    alice.create_repo(repo_id)
    alice.upload_file(path_or_fileobj=b"*.tmp\n", path_in_repo=".gitignore", repo_id=repo_id)
    files = [{"path": p, "size": 1, "sample": "eA=="} for p in ("x.tmp", "x.txt")]
    answer = httpx.post(
        f"{hub.url}/api/models/{repo_id}/preupload/main",
        json={"files": files},
        headers={"authorization": f"Bearer {USERS['alice']}"},
    ).json()
    assert {f["path"]: f["shouldIgnore"] for f in answer["files"]} == {
        "x.tmp": True,
        "x.txt": False,
    }
    sent = httpx.post(
        f"{hub.url}/api/models/{repo_id}/preupload/main",
        json={"files": files, "gitIgnore": "*.txt\n"},  # a .gitignore in the same commit wins
        headers={"authorization": f"Bearer {USERS['alice']}"},
    ).json()
    assert {f["path"]: f["shouldIgnore"] for f in sent["files"]} == {"x.tmp": False, "x.txt": True}


def test_whoami_full_names(tmp_path) -> None:
    names = {"bo": "Bo Person", "team": "The Team"}
    with DevHub(
        tmp_path / "hub", users={"bo": "hf_b"}, orgs={"team": ["bo"]}, fullnames=names
    ) as hub:
        me = HfApi(endpoint=hub.url, token="hf_b").whoami()
    assert me["fullname"] == "Bo Person"
    assert [o["fullname"] for o in me["orgs"]] == ["The Team"]
