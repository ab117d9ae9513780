"""What reached devhub, checked from the host over plain HTTP, without the uploader's code.

For every row of `ckpt-uploader status --json`: the repo exists once, its
`checkpoint_manifest.json` lists exactly the files the repo holds (besides itself and
.gitattributes), every file downloads with the manifest's size and sha256, and every file the
manifest says was copied (not generated) is byte-identical to the folder on the volume. Besides
that, no repo exists on devhub that no row names (a retry never created a second repo).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

MANIFEST = "checkpoint_manifest.json"
ALSO_IN_REPO = {MANIFEST, ".gitattributes"}


def _get(endpoint: str, token: str, path: str) -> bytes:
    request = urllib.request.Request(endpoint.rstrip("/") + path,
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def _resolve(endpoint: str, token: str, repo_id: str, path: str) -> bytes:
    return _get(endpoint, token, f"/{repo_id}/resolve/main/{urllib.parse.quote(path)}")


def _local_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def check_repo(endpoint: str, token: str, row: dict[str, Any], volume: Path) -> list[str]:
    """Problems with one status row's repo (empty when all is as the manifest says)."""
    repo_id, folder = row["repo_id"], volume / row["folder"]
    label = f"{row['kind']} {row['step']} ({repo_id})"
    if row["state"] != "verified":
        return [f"{label}: state {row['state']}, last error {row.get('last_error')}"]
    problems = []
    manifest = json.loads(_resolve(endpoint, token, repo_id, MANIFEST))
    listed = {f["path"]: f for f in manifest["files"]}
    tree = json.loads(_get(endpoint, token, f"/api/models/{repo_id}/tree/main?recursive=true"))
    in_repo = {e["path"] for e in tree if e.get("type") == "file"}
    if in_repo != set(listed) | ALSO_IN_REPO:
        problems.append(f"{label}: repo holds {sorted(in_repo)}, manifest lists {sorted(listed)}")
    local = _local_files(folder) if folder.is_dir() else {}
    for path, entry in sorted(listed.items()):
        data = _resolve(endpoint, token, repo_id, path)
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{label}: {path} on the Hub differs from its manifest entry")
        if entry.get("generated"):
            continue
        source = local.get(path)
        if source is None:
            problems.append(f"{label}: {path} is not in {folder}")
        elif source.read_bytes() != data:
            problems.append(f"{label}: {path} differs from {source}")
    copied = {p for p, e in listed.items() if not e.get("generated")}
    generated = {p for p, e in listed.items() if e.get("generated")}
    missing = set(local) - copied - generated
    if missing:
        problems.append(f"{label}: local files never uploaded: {sorted(missing)}")
    return problems


def hub_report(endpoint: str, token: str, user: str, rows: list[dict[str, Any]],
               volume: Path) -> dict[str, Any]:
    repos = sorted(r["id"] for r in json.loads(
        _get(endpoint, token, f"/api/models?author={user}&limit=1000")))
    problems = []
    for row in rows:
        problems += check_repo(endpoint, token, row, volume)
    named = [r["repo_id"] for r in rows]
    if sorted(named) != repos:
        problems.append(f"repos on devhub {repos} != repos in the state {sorted(named)}")
    commits = {repo: len(json.loads(_get(endpoint, token, f"/api/models/{repo}/commits/main")))
               for repo in repos}
    return {"repos": repos, "commits": commits, "problems": problems,
            "files_checked": sum(1 for _ in rows)}
