"""Which repos on the Hub are this run's, for `cleanup`: from run info, or from our own state.

This project's trainer (and `trainer.sidecar.SidecarCallback`) writes a run id into
`run_info.json` and every manifest, and that id scopes the run. Any other trainer writes no run
info, and its manifests carry an empty run id shared with every other such run in the
namespace; there, the uploader's state is the record of what this output dir uploaded, so the
run is exactly the repos its rows name. Without either, nothing can be scoped: `cleanup` then
deletes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from uploader.retention import RemoteRepo, current_run_id
from uploader.settings import UploaderSettings
from uploader.state import DB_FILENAME, StateStore


@dataclass(frozen=True)
class RunScope:
    run_id: str | None  # from run_info.json
    repo_ids: frozenset[str] | None  # from the uploader's state, when there is no run info

    @property
    def known(self) -> bool:
        return self.run_id is not None or bool(self.repo_ids)

    @property
    def source(self) -> str:
        return "run_info.json" if self.run_id is not None else "the uploader's state"

    def select(self, repos: Iterable[RemoteRepo]) -> tuple[list[RemoteRepo], str]:
        """The repos to plan over and the run id that marks them ours in their manifests."""
        repos = list(repos)
        if self.run_id is not None:
            return repos, self.run_id
        ours = [r for r in repos if r.repo_id in (self.repo_ids or ())]
        # One output dir, one run: the id most of its manifests carry ("" for plain Trainer
        # runs). A repo with another id is then kept as "another run": when in doubt, keep.
        ids = Counter(r.manifest.run_id for r in ours if r.manifest is not None)
        return ours, ids.most_common(1)[0][0] if ids else ""


def run_scope(settings: UploaderSettings) -> RunScope:
    run_id = current_run_id(settings.output_dir)
    if run_id is not None:
        return RunScope(run_id, None)
    return RunScope(None, frozenset(_state_repo_ids(settings)) or None)


def _state_repo_ids(settings: UploaderSettings) -> set[str]:
    state_dir = settings.resolved_state_dir
    if not (state_dir / DB_FILENAME).exists():
        return set()
    store = StateStore.open(state_dir, readonly=True)
    try:
        return {r.repo_id for r in store.all() if r.repo_id}
    finally:
        store.close()
