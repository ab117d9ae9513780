"""`best`: this run's best verified checkpoint by `--metric` (lower is better): repo, URL, value.

Read from the state (without the writer's lock, like `status`); when the state is gone or holds
nothing, from the Hub: this namespace's repos with the prefix, their names parsed back and each
`checkpoint_manifest.json` read, keeping this run's (the run id in `run_info.json`). `--json`
prints one JSON object and nothing else. Exit 0 with an answer, 1 without one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from uploader.cli import EXIT_FAILED, EXIT_OK
from uploader.errors import ConfigError
from uploader.retention import best_record, best_remote, current_run_id, survey
from uploader.settings import UploaderSettings
from uploader.state import DB_FILENAME, Record, StateStore


@dataclass(frozen=True)
class Answer:
    repo_id: str
    url: str
    step: int | None
    metric: str
    value: float
    source: str  # "state" or "hub"


def run(settings: UploaderSettings) -> int:
    run_id = current_run_id(settings.output_dir)
    records = _state_records(settings)
    if records:
        record = best_record(records, settings.metric, run_id=run_id)
        answer = _from_record(record, settings.metric) if record else None
    else:
        answer = _from_hub(settings, run_id)
    if answer is None:
        message = f"no verified checkpoint with {settings.metric} yet"
        print(json.dumps(None) if settings.json_output else message)
        return EXIT_FAILED
    if settings.json_output:
        print(json.dumps(asdict(answer)))
    else:
        print(f"best by {answer.metric}: step {answer.step}, {answer.metric} {answer.value:.6g} "
              f"(from the {answer.source})\n  repo: {answer.repo_id}\n  url:  {answer.url}")
    return EXIT_OK


def _state_records(settings: UploaderSettings) -> list[Record]:
    state_dir = settings.resolved_state_dir
    if not (state_dir / DB_FILENAME).exists():
        return []
    store = StateStore.open(state_dir, readonly=True)
    try:
        return store.all()
    finally:
        store.close()


def _from_record(record: Record, metric: str) -> Answer:
    return Answer(record.repo_id, record.url or "", record.step, metric, record.metrics[metric],
                  "state")


def _from_hub(settings: UploaderSettings, run_id: str | None) -> Answer | None:
    if run_id is None:
        raise ConfigError(
            f"no uploader state and no run_info.json in {settings.output_dir}: cannot tell "
            "which repos on the Hub belong to this run",
            hint="pass the trainer's --output-dir (it holds run_info.json)")
    # huggingface_hub is heavy to import; only this road needs it.
    from uploader.service import make_hub, token_provider

    hub = make_hub(settings, token_provider(os.environ), os.environ)
    namespace = settings.namespace or hub.whoami().name
    repo = best_remote(survey(hub, namespace, settings.repo_prefix), run_id, settings.metric)
    if repo is None:
        return None
    value = repo.metric(settings.metric)
    assert value is not None  # best_remote ranks only repos that have it
    return Answer(repo.repo_id, hub.repo_url(repo.repo_id), repo.step, settings.metric, value,
                  "hub")
