"""Apply a `damage` fault to a repo's head: drop a file or make it report a wrong hash."""

from __future__ import annotations

import logging
from dataclasses import replace
from fnmatch import fnmatchcase

from .faults import FaultRule
from .storage import RepoKey, Storage
from .wire import HubError

log = logging.getLogger(__name__)


def apply_damage(storage: Storage, rule: FaultRule) -> list[str]:
    """Damage the files matching `rule.file` on the branch head; returns their paths."""
    assert rule.repo and rule.file
    namespace, _, name = rule.repo.partition("/")
    repo = storage.get(RepoKey(rule.repo_type, namespace, name))
    if repo is None:
        raise HubError(404, f"damage: repo {rule.repo} not found", "RepoNotFound")
    with repo.lock:
        head = storage.resolve(repo, rule.branch)
        paths = [p for p in head.tree if p == rule.file or fnmatchcase(p, rule.file)]
        if not paths:
            raise HubError(404, f"damage: {rule.file} not in {rule.repo}", "EntryNotFound")
        tree = dict(head.tree)
        for path in paths:
            if rule.mode == "drop":
                del tree[path]
            else:
                tree[path] = replace(tree[path], damaged=True)
        storage.rewrite_tree(repo, head, tree)
    log.info("fault %d damaged %s in %s (%s)", rule.id, paths, rule.repo, rule.mode)
    return paths
