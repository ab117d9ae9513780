"""`cleanup`: delete this run's checkpoint repos but the best N, the newest M and every final.

The plan comes from the Hub: this namespace's repos with the prefix, each judged by its name and
manifest (`uploader.retention`). This run is the run id in `run_info.json`, or, for a trainer
that writes none, the repos this uploader's state recorded (`uploader.run_scope`). A repo of
another run or prefix, or one whose manifest cannot be read, is never deleted. Without `--yes` (or with `--dry-run`) the plan is printed and nothing
changes. With `--yes` it takes the writer's lock and, for each planned repo, records its rows
`deleted` and then deletes it ("record, then act": a crash in between leaves rows saying deleted
for a repo the next cleanup plans again); a failed deletion puts the rows back. `backfill` and
`watch` never upload a `deleted` version again. Exit 1 when a deletion failed.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack

from uploader.cli import EXIT_FAILED, EXIT_OK
from uploader.errors import ConfigError, UploaderError
from uploader.hub import HubClient
from uploader.logs import quiet_progress_bars, setup_logging
from uploader.retention import Action, CleanupItem, plan_cleanup, survey
from uploader.run_scope import run_scope
from uploader.service import check_output_dir, make_hub, open_pipeline, token_provider
from uploader.settings import UploaderSettings
from uploader.state import State, StateStore

log = logging.getLogger("uploader.cleanup")


def run(settings: UploaderSettings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    quiet_progress_bars(settings.log_format)
    check_output_dir(settings, must_exist=True)
    scope = run_scope(settings)
    if not scope.known:
        raise ConfigError(f"no readable run_info.json and no uploader state in "
                          f"{settings.output_dir}: cannot tell which repos belong to this run, "
                          "so nothing is deleted", hint="pass the trainer's --output-dir (and "
                          "--state-dir if the uploader used another one)")
    with ExitStack() as stack:
        store: StateStore | None = None
        if settings.yes:
            opened = open_pipeline(settings, stack, environ=os.environ, wait_for_hub=False)
            hub, namespace, store = opened.hub, opened.namespace, opened.store
        else:  # a plan only: no lock, so it can run next to `watch`
            hub = make_hub(settings, token_provider(os.environ), os.environ)
            namespace = settings.namespace or hub.whoami().name
        repos, run_id = scope.select(survey(hub, namespace, settings.repo_prefix))
        items = plan_cleanup(repos, run_id,
                             keep_best=settings.keep_best, keep_latest=settings.keep_latest,
                             metric=settings.metric)
        _print_plan(items, settings, run_id or f"in {scope.source}", namespace)
        doomed = [item.repo.repo_id for item in items if item.action is Action.DELETE]
        if store is None:
            print(f"dry run: nothing deleted; pass --yes to delete {len(doomed)} repos")
            return EXIT_OK
        failed = [repo_id for repo_id in doomed if not _delete(hub, store, repo_id)]
        print(f"deleted {len(doomed) - len(failed)} repos"
              + (f"; {len(failed)} could not be deleted" if failed else ""))
        return EXIT_FAILED if failed else EXIT_OK


def _print_plan(items: list[CleanupItem], settings: UploaderSettings, run_id: str,
                namespace: str) -> None:
    print(f"cleanup plan for run {run_id} ({namespace}/{settings.repo_prefix}-*): keep the "
          f"{settings.keep_best} best by {settings.metric}, the {settings.keep_latest} newest "
          "and every final adapter")
    if not items:
        print("  no repos found")
    width = max((len(item.repo.repo_id) for item in items), default=0)
    for item in items:
        print(f"  {item.action:<7} {item.repo.repo_id:<{width}}  {item.reason}")


def _delete(hub: HubClient, store: StateStore, repo_id: str) -> bool:
    rows = [r for r in store.by_repo(repo_id) if r.state is not State.DELETED]
    for row in rows:
        store.update(row.id, state=State.DELETED)
    try:
        hub.delete_repo(repo_id)
    except UploaderError as exc:
        for row in rows:
            store.update(row.id, state=row.state)
        log.error("cannot delete repo", extra={"repo_id": repo_id, "error": exc.one_line()})
        return False
    log.info("deleted repo", extra={"repo_id": repo_id, "records": len(rows)})
    return True
