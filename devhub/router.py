"""The route table: (methods, path regex) -> handler. Paths are matched still percent-encoded."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from . import admin, api_files, api_repos, commit, lfs, xet
from .app import REPO_NOT_FOUND, App, Request
from .wire import HubError, Response

Handler = Callable[..., Response]
_T = r"(models|datasets|spaces)"
_REPO = _T + r"/([^/]+)/([^/]+)"
ADMIN_PREFIX = "/_devhub/"
_CAS = xet.STORAGE_PREFIX + "/([^/]+)"
_H = xet.HEX64


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Handler


def _r(methods: str, pattern: str, handler: Handler) -> Route:
    return Route(tuple(methods.split()), re.compile(f"^{pattern}$"), handler)


ROUTES = [
    _r("GET", "/_devhub/health", admin.health),
    _r("GET", "/_devhub/faults", admin.get_faults),
    _r("POST", "/_devhub/faults", admin.add_faults),
    _r("DELETE", "/_devhub/faults", admin.clear_faults),
    _r("GET", "/_devhub/log", admin.get_log),
    _r("GET", "/api/whoami-v2", api_repos.whoami),
    _r("POST", "/api/repos/create", api_repos.create_repo),
    _r("DELETE", "/api/repos/delete", api_repos.delete_repo),
    _r("POST", "/api/validate-yaml", api_repos.validate_yaml),
    _r("GET", f"/api/{_T}", api_repos.list_repos),
    _r("GET", f"/api/{_REPO}", api_repos.repo_info),
    _r("GET", f"/api/{_REPO}/revision/([^/]+)", api_repos.repo_info),
    _r("PUT", f"/api/{_REPO}/settings", api_repos.update_settings),
    _r("GET", f"/api/{_REPO}/refs", api_repos.list_refs),
    _r("POST", f"/api/{_REPO}/branch/(.+)", api_repos.create_branch),
    _r("DELETE", f"/api/{_REPO}/branch/(.+)", api_repos.delete_branch),
    _r("GET", f"/api/{_REPO}/tree/([^/]+)(?:/(.+))?", api_files.tree),
    _r("POST", f"/api/{_REPO}/paths-info/([^/]+)", api_files.post_paths_info),
    _r("GET", f"/api/{_REPO}/commits/([^/]+)", api_files.list_commits),
    _r("POST", f"/api/{_REPO}/preupload/([^/]+)", commit.preupload),
    _r("POST", f"/api/{_REPO}/commit/([^/]+)", commit.post_commit),
    _r("POST", r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch", lfs.batch),
    _r("GET", f"/api/{_REPO}/xet-write-token/([^/]+)", xet.write_token),
    _r("GET", f"/api/{_REPO}/xet-read-token/([^/]+)", xet.read_token),
    _r("GET", f"{_CAS}/v1/chunks/([^/]+)/{_H}", xet.dedup_query),
    _r("POST", f"{_CAS}/v1/xorbs/([^/]+)/{_H}", xet.upload_xorb),
    _r("POST", f"{_CAS}/v1/shards", xet.upload_shard),
    _r("GET", f"{_CAS}/v1/reconstructions/{_H}", xet.reconstruction),
    _r("GET", rf"{_CAS}/fetch/{_H}/(\d+)/([0-9a-f]+)", xet.fetch_xorb),
    _r("POST", f"{_CAS}/v1/telemetry", xet.telemetry),
    _r("PUT", "/_lfs/([^/]+)", lfs.put_object),
    _r("POST", "/_lfs/([^/]+)", lfs.complete_multipart),
    _r("PUT", r"/_lfs/([^/]+)/part/(\d+)", lfs.put_part),
    _r("POST", "/_lfs/([^/]+)/verify", lfs.verify),
    _r(
        "GET HEAD",
        r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)",
        api_files.resolve,
    ),
]


def dispatch(app: App, req: Request) -> Response:
    allowed = False
    for route in ROUTES:
        match = route.pattern.match(req.path)
        if match is None:
            continue
        if req.method in route.methods:
            return route.handler(app, req, *match.groups())
        allowed = True
    if allowed:
        raise HubError(405, f"Method {req.method} not allowed on {req.path}")
    # The Hub answers an unknown route as a missing repo; without the code the client raises a
    # plain HTTP error where `repo_exists`, `revision_exists` and `file_exists` expect this one.
    raise HubError(404, REPO_NOT_FOUND, "RepoNotFound")


def is_admin(path: str) -> bool:
    return path.startswith(ADMIN_PREFIX)
