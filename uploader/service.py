"""Assembly: turn checked settings into a running pipeline, with the start-up checks in order.

    settings -> rank 0? -> output dir -> token -> state dir (local fs) + lock -> Hub reachable?
             -> whoami -> namespace writable -> run info -> Pipeline

Every check the user can fix raises `ConfigError` (exit 2, one line) before anything is watched.
An endpoint that is merely unreachable is not bad input: `watch` waits for it, `backfill` gives
up after its retries (exit 1).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from shared.env import TokenError, read_token, shadowed_token_file
from shared.run_info import RunInfo, RunInfoError, read_run_info
from uploader.detect import CompletionDetector
from uploader.errors import AuthError, ConfigError, TransientError
from uploader.events import Events
from uploader.hub import HubClient, HubConfig, Identity
from uploader.lock import StateLock
from uploader.pacing import PACING_FILENAME, Pacer, pacer_from_limits
from uploader.pipeline import FINISHED, Pipeline, PipelineConfig
from uploader.priority import lower_priority
from uploader.retry import RetryPolicy
from uploader.settings import UploaderSettings
from uploader.stage import DEFAULT_DENYLIST, Stager
from uploader.state import StateStore
from uploader.transfer import HF_XET_CACHE, choose_transfer

log = logging.getLogger(__name__)

# Waiting for an endpoint that is not up yet (sidecars start before networks are ready).
STARTUP_BACKOFF_INITIAL = 1.0
STARTUP_BACKOFF_MAX = 30.0
# The usual names of a process's rank: RANK is the world rank (torchrun, accelerate, DeepSpeed),
# NODE_RANK the node's (torchrun's flag, Lightning). A sidecar sees only what its pod gives it.
RANK_VARIABLES = ("RANK", "NODE_RANK")
RANK_HINT = ("run one uploader per run, next to rank 0 (with a shared filesystem rank 0's marker "
             "covers every rank's files); set UPLOADER_ANY_RANK=1 only if this variable does "
             "not mean a training rank here")


def check_rank(environ: Mapping[str, str], any_rank: bool = False) -> None:
    """ConfigError when RANK/NODE_RANK say this is not rank 0 (unless `any_rank`).

    Only world rank 0 writes a checkpoint's completion marker, after a barrier, so only next to
    it is a checkpoint known to be complete; an uploader beside another rank would see that
    rank's shard of a checkpoint (without a shared filesystem) and upload it as if whole.
    """
    if any_rank:
        return
    for name in RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            rank = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a rank (an integer)", RANK_HINT) from None
        if rank != 0:
            raise ConfigError(f"this uploader runs beside {name}={rank}, not rank 0: it would "
                              "upload partial checkpoints", RANK_HINT)


def check_output_dir(settings: UploaderSettings, must_exist: bool) -> Path:
    out = settings.output_dir
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {out} is a file, not a directory",
                          hint="set --output-dir / UPLOADER_OUTPUT_DIR to the trainer's output dir")
    if must_exist and not out.is_dir():
        raise ConfigError(f"output dir {out} does not exist",
                          hint="set --output-dir / UPLOADER_OUTPUT_DIR to the trainer's output dir")
    return out


def token_provider(environ: Mapping[str, str]) -> Callable[[], str]:
    """Checks the token now and returns a function that re-reads it before each call.

    `HF_TOKEN`, then `HF_TOKEN_FILE` (a secret file, re-read so a rotated secret takes effect),
    then the login `hf auth login` saved, found by huggingface_hub itself (`HF_HOME`,
    `HF_TOKEN_PATH`, refreshed when it is an expiring OAuth token).
    """
    shadowed = shadowed_token_file(environ)
    if shadowed:
        log.warning("HF_TOKEN and HF_TOKEN_FILE are both set: HF_TOKEN is used and the file is "
                    "not read; unset HF_TOKEN to use the secret file",
                    extra={"token_file": shadowed})

    def current() -> str:
        try:
            token = read_token(environ) or saved_login()
        except TokenError as exc:
            raise ConfigError(str(exc)) from None
        if token is None:
            raise ConfigError("no Hub token", hint="set HF_TOKEN or HF_TOKEN_FILE (a secret "
                              "file), or run `hf auth login`")
        return token

    current()
    return current


def saved_login() -> str | None:
    """The token of `hf auth login`, where huggingface_hub keeps it; None when not logged in."""
    from huggingface_hub import get_token

    return get_token()


def make_hub(settings: UploaderSettings, tokens: Callable[[], str], environ: Mapping[str, str],
             stop: threading.Event | None = None, pacer: Pacer | None = None) -> HubClient:
    choice = choose_transfer(settings.transfer, environ)
    config = HubConfig(endpoint=settings.endpoint, token_provider=tokens,
                       private=settings.private, connect_timeout=settings.connect_timeout,
                       read_timeout=settings.read_timeout,
                       use_xet=choice.use_xet, xet_fallback=choice.may_fall_back,
                       xet_cache=Path(environ[HF_XET_CACHE]) if environ.get(HF_XET_CACHE)
                       else None)
    return HubClient(config, retry_policy(settings), stop=stop, pacer=pacer)


def make_pacer(settings: UploaderSettings, state_dir: Path | None) -> Pacer | None:
    """The client-side caps on repo creations and commits per hour; None when both are 0."""
    return pacer_from_limits(settings.max_commits_per_hour, settings.max_repos_per_hour,
                             state_dir / PACING_FILENAME if state_dir is not None else None)


def retry_policy(settings: UploaderSettings) -> RetryPolicy:
    return RetryPolicy(attempts=settings.retry_attempts, max_wait=settings.retry_max_wait,
                       max_rate_limit_wait=settings.max_rate_limit_wait)


def connect(hub: HubClient, settings: UploaderSettings, *, wait: bool,
            stop: threading.Event | None = None) -> str:
    """whoami and the namespace check; returns the namespace. AuthError -> ConfigError."""
    identity = _whoami(hub, wait=wait, stop=stop)
    namespace = settings.namespace or identity.name
    try:
        hub.check_write_access(namespace)
    except AuthError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None
    log.info("connected", extra={"endpoint": settings.endpoint, "user": identity.name,
                                 "namespace": namespace, "transfer": hub.transfer})
    return namespace


def _whoami(hub: HubClient, *, wait: bool, stop: threading.Event | None) -> Identity:
    delay = STARTUP_BACKOFF_INITIAL
    while True:
        try:
            return hub.whoami()
        except AuthError as exc:
            raise ConfigError(exc.message, hint=exc.hint) from None
        except TransientError as exc:
            if not wait or (stop is not None and stop.is_set()):
                raise
            log.warning("Hub endpoint not reachable yet; waiting",
                        extra={"error": exc.one_line(), "retry_in": delay})
            if (stop or threading.Event()).wait(delay):
                raise
            delay = min(delay * 2, STARTUP_BACKOFF_MAX)


def read_run(settings: UploaderSettings) -> RunInfo | None:
    try:
        return read_run_info(settings.output_dir)
    except RunInfoError as exc:
        log.warning("run info unreadable; continuing without it", extra={"error": str(exc)})
        return None


def run_in_progress(settings: UploaderSettings) -> bool:
    """True while a trainer that writes run info (and so markers) has not ended its run."""
    run = read_run(settings)
    return run is not None and not run.ended


@dataclass
class Opened:
    """What a command holds while it runs; closed by the ExitStack that opened it."""

    store: StateStore
    pipeline: Pipeline
    namespace: str
    hub: HubClient


def open_pipeline(settings: UploaderSettings, stack: ExitStack, *, environ: Mapping[str, str],
                  wait_for_hub: bool, stop: threading.Event | None = None,
                  events: Events | None = None) -> Opened:
    check_rank(environ, settings.any_rank)
    check_output_dir(settings, must_exist=not wait_for_hub)
    tokens = token_provider(environ)
    # Before any library starts a thread: new threads inherit the priority.
    applied = lower_priority(settings.nice, settings.io_priority, settings.cpu_scheduler)
    log.debug("running at lower priority so training goes first", extra={
        "nice": applied.nice, "io_priority": applied.io, "cpu_scheduler": applied.cpu})
    state_dir = settings.resolved_state_dir
    # The lock first: a second uploader must not even initialise the database while the
    # first one holds it (concurrent WAL set-up can fail with "database is locked").
    lock = StateLock(state_dir)
    lock.acquire(wait=settings.wait_for_lock)
    stack.callback(lock.release)
    store = StateStore.open(state_dir)
    stack.callback(store.close)
    hub = make_hub(settings, tokens, environ, stop, make_pacer(settings, state_dir))
    namespace = connect(hub, settings, wait=wait_for_hub, stop=stop)
    run = read_run(settings)
    config = PipelineConfig(
        output_dir=settings.output_dir, namespace=namespace, prefix=settings.repo_prefix,
        base_model=run.base_model if run else None, run_id=run.run_id if run else None,
        round_backoff=settings.round_backoff, round_backoff_max=settings.round_backoff_max,
        yield_to_saves=settings.yield_to_saves)
    detector = CompletionDetector(settings.output_dir, settings.settle_seconds,
                                  abandoned_after=settings.abandoned_after,
                                  markers_expected=lambda: run_in_progress(settings))
    stager = Stager(settings.staging_dir, tuple(DEFAULT_DENYLIST) + tuple(settings.denylist),
                    max_held_bytes=settings.max_staged_bytes)
    live = {r.version_key for r in store.all() if r.state not in FINISHED}
    for removed in stager.reconcile(live):
        log.info("removed leftover staging", extra={"key": removed})
    pipeline = Pipeline(config, store, detector, stager, hub, events=events, stop=stop)
    return Opened(store=store, pipeline=pipeline, namespace=namespace, hub=hub)


__all__ = ["Opened", "check_output_dir", "check_rank", "connect",
           "make_pacer", "open_pipeline", "read_run", "saved_login", "token_provider"]
