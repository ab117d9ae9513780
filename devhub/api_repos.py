"""Repo-level endpoints: whoami, create, delete, settings, info, listing, refs, branches,
validate-yaml."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from .app import PLURAL_TO_TYPE, App, Request, find_repo, next_link, repo_key, repo_url
from .auth import can_read, require_user, require_write
from .storage import COMMIT_ID_RE, DEFAULT_BRANCH, Repo, RepoKey
from .trees import sibling_json
from .wire import HubError, Response, json_response
from .yaml_check import validate_card

MAX_PAGE = 1000


def whoami(app: App, req: Request) -> Response:
    user = require_user(req.user)
    role = user.role.value
    fullnames = app.config.fullnames
    return json_response(
        {
            "type": "user",
            "id": user.name,
            "name": user.name,
            "fullname": fullnames.get(user.name, user.name),
            "email": None,
            "emailVerified": False,
            "isPro": False,
            "canPay": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [
                {
                    "type": "org",
                    "name": org,
                    "fullname": fullnames.get(org, org),
                    "id": org,
                    "roleInOrg": "write",
                    "isEnterprise": False,
                }
                for org in user.orgs
            ],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": f"devhub-{role}",
                    "role": role,
                    "createdAt": "2024-01-01T00:00:00.000Z",
                },
            },
        }
    )


def _body_key(req: Request, payload: dict[str, Any]) -> RepoKey:
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise HubError(400, "Missing repo name")
    namespace = payload.get("organization")
    if not namespace:
        namespace = require_user(req.user).name
    repo_type = payload.get("type") or "model"
    return RepoKey(repo_type, namespace, name).validate()


def create_repo(app: App, req: Request) -> Response:
    payload = req.body.json()
    key = _body_key(req, payload)
    require_write(req.user, key.namespace)  # namespace before existence: no leak of private names
    if payload.get("visibility") is not None:
        private = payload["visibility"] == "private"
    else:
        private = bool(payload.get("private", False))
    url = repo_url(req, key)
    if app.storage.create_repo(key, private) is None:
        raise HubError(409, f"You already created this {key.repo_type} repo", extra={"url": url})
    return json_response({"url": url, "name": key.repo_id, "id": key.repo_id})


def delete_repo(app: App, req: Request) -> Response:
    key = _body_key(req, req.body.json())
    find_repo(app, req, key, write=True)
    app.storage.delete_repo(key)
    return json_response({})


def update_settings(app: App, req: Request, plural: str, namespace: str, name: str) -> Response:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], namespace, name), write=True)
    payload = req.body.json()
    with repo.lock:
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        app.storage.save(repo)
    return json_response({})


def repo_json(app: App, repo: Repo, revision: str | None, full: bool) -> dict[str, Any]:
    commit = app.storage.resolve(repo, revision or DEFAULT_BRANCH)
    out: dict[str, Any] = {
        "_id": repo.key.repo_id,
        "id": repo.key.repo_id,
        "author": repo.key.namespace,
        "sha": commit.id,
        "lastModified": commit.date,
        "createdAt": repo.created_at,
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
    }
    if repo.key.repo_type == "model":
        out["modelId"] = repo.key.repo_id
    if full:
        out["siblings"] = [sibling_json(p, e) for p, e in sorted(commit.tree.items())]
    return out


def repo_info(
    app: App, req: Request, plural: str, namespace: str, name: str, revision: str | None = None
) -> Response:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], namespace, name))
    return json_response(repo_json(app, repo, revision, full=True))


def list_repos(app: App, req: Request, plural: str) -> Response:
    repo_type = PLURAL_TO_TYPE[plural]
    author, search = req.arg("author"), (req.arg("search") or "").lower()
    visible = [
        repo
        for repo in app.storage.all_repos()
        if repo.key.repo_type == repo_type
        and can_read(req.user, repo.key.namespace, repo.private)
        and (author is None or repo.key.namespace == author)
        and search in repo.key.repo_id.lower()
    ]
    page = max(1, min(req.int_arg("limit", MAX_PAGE), MAX_PAGE))
    cursor = req.int_arg("cursor", 0)
    full = req.flag("full") or req.arg("expand") is not None
    items = [repo_json(app, r, None, full) for r in visible[cursor : cursor + page]]
    more = cursor + page < len(visible)
    return json_response(items, headers=next_link(req, "cursor", cursor + page) if more else {})


def list_refs(app: App, req: Request, plural: str, namespace: str, name: str) -> Response:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], namespace, name))
    branches = [
        {"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": commit}
        for branch, commit in sorted(repo.refs.items())
    ]
    return json_response({"branches": branches, "converts": [], "tags": []})


def validate_yaml(app: App, req: Request) -> Response:
    payload = req.body.json()
    result = validate_card(str(payload.get("content", "")))
    return json_response(result.to_json(), status=400 if result.errors else 200)


BRANCH_NAME_RE = re.compile(r"^(?!refs/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,256}(?<![/.])$")


def create_branch(
    app: App, req: Request, plural: str, namespace: str, name: str, branch: str
) -> Response:
    """A new branch at `startingPoint` (a branch or commit; default: the head of main)."""
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], namespace, name), write=True)
    branch = unquote(branch)
    if not BRANCH_NAME_RE.match(branch) or COMMIT_ID_RE.match(branch):
        raise HubError(400, f"Invalid branch name {branch!r}")
    payload = req.body.json() if req.body.declared_length else {}
    start = str(payload.get("startingPoint") or DEFAULT_BRANCH)
    with repo.lock:
        commit = app.storage.resolve(repo, start)
        if branch in repo.refs:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.refs[branch] = commit.id
        app.storage.save(repo)
    return json_response({})


def delete_branch(
    app: App, req: Request, plural: str, namespace: str, name: str, branch: str
) -> Response:
    repo = find_repo(app, req, repo_key(PLURAL_TO_TYPE[plural], namespace, name), write=True)
    branch = unquote(branch)
    if branch == DEFAULT_BRANCH:
        raise HubError(403, f"Cannot delete the default branch {DEFAULT_BRANCH}")
    with repo.lock:
        if repo.refs.pop(branch, None) is None:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        app.storage.save(repo)
    return json_response({})
