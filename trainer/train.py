"""One training run, top to bottom.

Record the start (run info) -> find where to resume -> load data, base model, LoRA -> train with
the completion-marker callback -> final adapter, F1, final marker -> record the outcome. The
outcome is written in a `finally`, also on an exception or SIGTERM (turned into `Terminated`),
so the uploader's `--exit-when-done` never waits for a run that is gone.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, set_seed

from shared.layout import run_info_path
from shared.run_info import Outcome, RunInfo, finish_run, read_run_info, start_run
from trainer import dataset, prompts
from trainer.arguments import training_arguments
from trainer.callbacks import (
    CompletionMarkerCallback,
    StopAfterStepCallback,
    mark_resumed_checkpoint,
)
from trainer.errors import ResumeError
from trainer.evaluate import F1Results
from trainer.final import F1Request, finalize
from trainer.hub_restore import HubClient
from trainer.machine import Machine, detect
from trainer.model import (
    LoadSpec,
    LoraSpec,
    add_lora,
    load_base_model,
    load_tokenizer,
    prepare_for_training,
)
from trainer.precision import Precision
from trainer.preflight import check
from trainer.records import NerData
from trainer.resume import HubAccess, ResumePoint, resolve_resume
from trainer.settings import TrainerSettings
from trainer.tiny import ensure_tiny_model
from trainer.tiny_base import tiny_base_folder
from trainer.tracking import finish_wandb, log_metrics, start_wandb

log = logging.getLogger(__name__)

TINY_CPU_THREADS = 1


class Terminated(BaseException):
    """SIGTERM arrived; unwinds like KeyboardInterrupt so `finally` blocks record the outcome."""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    outcome: Outcome
    global_step: int
    max_steps: int
    final_dir: Path | None = None
    f1: F1Results | None = None

    @property
    def stopped_early(self) -> bool:
        return self.outcome is Outcome.FAILED and self.global_step < self.max_steps


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _process_state() -> Any:
    from accelerate import PartialState

    return PartialState()


def cpu_threads(settings: TrainerSettings, *, cuda: bool) -> int | None:
    """--cpu-threads, else one thread for the tiny model on CPU: its 64-wide matmuls are all
    OpenMP overhead, and on a busy 2-core machine two threads made a step ~30x slower (40 steps:
    91 s against 3 s). None leaves torch's default."""
    if settings.cpu_threads:
        return settings.cpu_threads
    return TINY_CPU_THREADS if settings.is_tiny and not cuda else None


def hub_access(settings: TrainerSettings, token: str | None) -> HubAccess:
    return HubAccess(endpoint=settings.hf_endpoint, token=token,
                     namespace=settings.hub_namespace, prefix=settings.hub_repo_prefix)


def record_start(settings: TrainerSettings, is_main: bool) -> RunInfo:
    """Write the run info (rank 0); a resumed run keeps its run id, W&B project and ids."""
    output_dir = settings.output_dir
    if settings.resume is not None and read_run_info(output_dir) is None:
        raise ResumeError(
            f"--resume {settings.resume} needs this run's id, but "
            f"{run_info_path(output_dir)} is missing",
            hint="start without --resume (a new run)",
        )
    if not is_main:
        info = read_run_info(output_dir)
        assert info is not None, "rank 0 writes the run info first"
        return info
    return start_run(output_dir, base_model=settings.base_model,
                     resume=settings.resume is not None, wandb_project=settings.wandb_project,
                     wandb_group=settings.wandb_group)


def run(
    settings: TrainerSettings,
    *,
    hub_token: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    hub_client_factory: Callable[[HubAccess], HubClient] | None = None,
    machine: Machine | None = None,
) -> RunResult:
    """Train once; the run info's outcome is written whatever happens after it was started.

    Options this machine cannot honour raise `PreflightError` first, before anything is
    recorded or downloaded.
    """
    precision = check(settings, machine or detect())
    state = _process_state()
    with sigterm_raises():
        with state.main_process_first():
            info = record_start(settings, state.is_main_process)
        outcome = Outcome.FAILED
        try:
            result = _train(settings, info, precision, hub_token, callbacks, hub_client_factory)
            outcome = result.outcome
            return result
        finally:
            if state.is_main_process:
                finish_run(settings.output_dir, outcome)
                log.info("run finished", extra={"run_id": info.run_id, "outcome": outcome.value})


def _train(
    settings: TrainerSettings, info: RunInfo, precision: Precision, hub_token: str | None,
    callbacks: Sequence[TrainerCallback], hub_client_factory: Callable[..., HubClient] | None,
) -> RunResult:
    threads = cpu_threads(settings, cuda=torch.cuda.is_available())
    if threads:
        torch.set_num_threads(threads)
    state = _process_state()
    data = dataset.load_data(
        dataset.DataSource(settings.dataset, settings.dataset_config, settings.train_split,
                           settings.validation_split, settings.validation_file),
        settings.ner_labels, token=hub_token, endpoint=settings.hf_endpoint,
        max_train=settings.max_train_samples, max_validation=settings.max_eval_samples,
    )
    resume_point: ResumePoint | None = None
    with state.main_process_first():  # rank 0 restores and builds; the others then find it
        if settings.resume is not None:
            resume_point = resolve_resume(settings.resume, settings.output_dir, info.run_id,
                                          hub_access(settings, hub_token), hub_client_factory)
            log.info("resuming", extra={"path": str(resume_point.path), "step": resume_point.step,
                                        "origin_repo": resume_point.origin_repo})
            if not resume_point.marked and state.is_main_process:
                # Saved completely, preempted before its marker: mark it now, before training
                # continues, so the uploader sees one version of this step (and the other ranks,
                # resolving after rank 0, find it marked).
                mark_resumed_checkpoint(settings.output_dir, resume_point.path.name, info.run_id)
        source: str | Path = settings.base_model
        if settings.is_tiny:
            source = _tiny_source(settings, data)
    trainer = _build_trainer(settings, info, source, data, precision, hub_token, callbacks)
    wandb_run = None
    if settings.report_to == "wandb" and state.is_main_process:
        wandb_run = start_wandb(info, settings.model_dump(mode="json"))
    failed = True
    try:
        result = _train_and_finish(trainer, settings, info, data, resume_point, wandb_run)
        failed = result.outcome is Outcome.FAILED
        return result
    finally:
        finish_wandb(wandb_run, failed)


def lora_spec(settings: TrainerSettings) -> LoraSpec:
    targets = settings.lora_targets
    return LoraSpec(settings.lora_r, settings.lora_alpha, settings.lora_dropout,
                    targets if isinstance(targets, str) else tuple(targets))


def build_model(
    settings: TrainerSettings, source: str | Path, precision: Precision, hub_token: str | None
) -> Any:
    """Base model (as --dtype, --load-in-4bit, --attn-implementation say), prepared, + LoRA."""
    set_seed(settings.seed)  # LoRA's initial weights must not depend on what ran before
    load = LoadSpec(precision, settings.load_in_4bit, settings.attn_implementation)
    model = prepare_for_training(load_base_model(source, token=hub_token, spec=load),
                                 load_in_4bit=settings.load_in_4bit,
                                 gradient_checkpointing=settings.gradient_checkpointing,
                                 packing=settings.packing)
    return add_lora(model, lora_spec(settings))


def _tiny_source(settings: TrainerSettings, data: NerData) -> Path:
    """The shipped pretrained tiny base; an install without it (its package data missing) falls
    back to a random tiny base built in the output dir, which runs everything but learns little."""
    shipped = tiny_base_folder()
    if shipped is not None:
        return shipped
    log.warning("the shipped tiny base is not installed; using a random tiny base, whose "
                "adapter will not learn the task (reinstall with trainer/data/tiny-base)")
    return ensure_tiny_model(settings.output_dir,
                             prompts.tokenizer_corpus(data.train, data.entity_types))


def _build_trainer(
    settings: TrainerSettings, info: RunInfo, source: str | Path, data: NerData,
    precision: Precision, hub_token: str | None, callbacks: Sequence[TrainerCallback],
) -> Trainer:
    """Tokenizer, base model + LoRA, encoded datasets and the callbacks, in one `Trainer`."""
    tokenizer = load_tokenizer(source, token=hub_token)
    model = build_model(settings, source, precision, hub_token)
    types, length = data.entity_types, settings.max_seq_length
    stop = [StopAfterStepCallback(settings.stop_after_step)] if settings.stop_after_step else []
    # fp16 only when set: bench/trainer_child.py wraps training_arguments without it.
    fp16 = {"fp16": True} if precision is Precision.FP16 else {}
    return Trainer(
        model=model,
        args=training_arguments(settings, bf16=precision is Precision.BF16,
                                run_name=f"train-{info.run_id[:8]}", **fp16),
        train_dataset=prompts.encode_dataset(tokenizer, data.train, types, length),
        eval_dataset=prompts.encode_dataset(tokenizer, data.validation, types, length),
        data_collator=prompts.collator(tokenizer.pad_token_id, packing=settings.packing),
        processing_class=tokenizer,
        callbacks=[CompletionMarkerCallback(settings.output_dir, info.run_id), *stop,
                   *callbacks],
    )


def _last_eval_loss(trainer: Trainer) -> float | None:
    losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    return losses[-1] if losses else None


def _train_and_finish(
    trainer: Trainer, settings: TrainerSettings, info: RunInfo, data: NerData,
    resume_point: ResumePoint | None, wandb_run: Any,
) -> RunResult:
    """Train; then, if the schedule ran to its end, the final adapter, F1 and final marker."""
    trainer.train(resume_from_checkpoint=str(resume_point.path) if resume_point else None)
    step, max_steps = trainer.state.global_step, trainer.state.max_steps
    if step < max_steps:
        log.warning("training stopped before the end of the schedule",
                    extra={"step": step, "max_steps": max_steps})
        return RunResult(info.run_id, Outcome.FAILED, step, max_steps)
    results = None
    if trainer.is_world_process_zero():
        request = F1Request(data.validation[: settings.f1_max_samples], data.entity_types,
                            settings.f1_batch_size, settings.f1_max_new_tokens)
        results = finalize(trainer.model, trainer.processing_class, settings.output_dir,
                           run_id=info.run_id,
                           step=step, request=request,
                           extra={"base_model": settings.base_model,
                                  "eval_loss": _last_eval_loss(trainer)})
        log_metrics(wandb_run, results.metrics(), step)
    trainer.accelerator.wait_for_everyone()
    return RunResult(info.run_id, Outcome.COMPLETED, step, max_steps,
                     settings.output_dir / "final", results)
