"""The trainer process of `bench.training_overhead`: one tiny training, one way of uploading.

    python -m bench.trainer_child --variant "d sidecar" --output-dir OUT --result R.json ...

It is `trainer.train.run` with the project's settings and three hooks, all from here: a
`Trainer` subclass that writes the padding as part of the optimizer state (so it is in the
folder before Trainer's own push and before the completion marker) and times `train()`; the
tiny base model named as the seed's real one; and per variant the seed's callback (b) or
Trainer's `push_to_hub` (c). The result file holds epoch times: train_start, train_end (the
`train()` call) and job_end (after the variant's own final upload).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import USER, MiB

NONE, SEED, PUSH, SIDECAR = "a no uploads", "b seed callback", "c push_to_hub", "d sidecar"
VARIANTS = (NONE, SEED, PUSH, SIDECAR)
PADDING_FILE = "optimizer_padding.bin"
PADDING_BLOCK = MiB
SEED_PREFIX = "llama3-medical-ner"  # the seed's repo names, also the sidecar's default prefix
SEED_BASE_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
FINAL_MARK = "-lora-final-"
PUSH_REPO = "llama3-medical-ner-lora"
END_OF_TRAINING = "End of training"  # Trainer.push_to_hub's default commit message
# The F1 pass after training is the same in every variant and not what is measured: keep it short.
F1_SAMPLES = 8


def write_padding(path: Path, size: int) -> None:
    """`size` fresh random bytes: no other file shares any of them. A repeated block would do
    for LFS (one object per file) but not for Xet, whose content-defined chunks would dedup
    all but the first block, and the upload would cost nothing, as no real checkpoint does."""
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = os.urandom(min(PADDING_BLOCK, size - written))
            out.write(piece)
            written += len(piece)


def _seed_callback(api: Any) -> Any:
    """The seed's `CheckpointUploadCallback` (shared/seed/checkpoint-strategy.md)."""
    from transformers import TrainerCallback

    class CheckpointUploadCallback(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            checkpoint_dir = f"{args.output_dir}/checkpoint-{state.global_step}"
            stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
            repo_id = f"{USER}/{SEED_PREFIX}-checkpoint-{state.global_step}-{stamp}"
            try:
                api.create_repo(repo_id, exist_ok=True)
                api.upload_folder(folder_path=checkpoint_dir, repo_id=repo_id,
                                  commit_message=f"Checkpoint at step {state.global_step}")
            except Exception as exc:  # the seed only prints a failure and trains on
                print(f"checkpoint upload failed: {exc}", flush=True)

    return CheckpointUploadCallback()


def _patch_trainer(pad_bytes: int, timings: dict[str, float], trainers: list[Any]) -> None:
    """Make `trainer.train` build a Trainer that pads each checkpoint and times `train()`."""
    import trainer.train as train_module

    class BenchTrainer(train_module.Trainer):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            trainers.append(self)

        def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
            super()._save_optimizer_and_scheduler(output_dir)
            if pad_bytes:
                write_padding(Path(output_dir) / PADDING_FILE, pad_bytes)

        def train(self, *args: Any, **kwargs: Any) -> Any:
            timings["train_start"] = time.time()
            try:
                return super().train(*args, **kwargs)
            finally:
                timings["train_end"] = time.time()

    train_module.Trainer = BenchTrainer


def _patch_base_model_name() -> None:
    """Name the tiny base model as the seed's real one: PEFT writes the name into each folder's
    README.md, and the Hub (devhub too) rejects a commit whose card names a local path."""
    import trainer.train as train_module

    original = train_module.add_lora

    def named(model: Any, spec: Any) -> Any:
        model.config.name_or_path = SEED_BASE_MODEL
        model.name_or_path = SEED_BASE_MODEL
        return original(model, spec)

    train_module.add_lora = named


def _patch_push_to_hub() -> None:
    """(c): the project's TrainingArguments, with Trainer's own push turned on."""
    import trainer.train as train_module

    original = train_module.training_arguments

    def with_push(settings: Any, *, bf16: bool, run_name: str) -> Any:
        args = original(settings, bf16=bf16, run_name=run_name)
        # The token comes from HF_TOKEN in the environment, as a user of the seed would set it.
        return args.set_push_to_hub(f"{USER}/{PUSH_REPO}", strategy="all_checkpoints")

    train_module.training_arguments = with_push


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--pad-bytes", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def upload_final(variant: str, api: Any, final_dir: Path | None, trainer: Any) -> None:
    """What (b) and (c) do after training; the sidecar picks the final folder up by itself."""
    if variant == SEED:  # the seed uploads the final adapter separately, to its own repo
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        repo_id = f"{USER}/{SEED_PREFIX}{FINAL_MARK}{stamp}"
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(final_dir), repo_id=repo_id)
    elif variant == PUSH:  # what a push_to_hub user calls last
        trainer.push_to_hub()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from huggingface_hub import HfApi

    import trainer.train as train_module
    from trainer.logs import configure_logging
    from trainer.settings import TrainerSettings

    configure_logging()
    timings: dict[str, float] = {}
    trainers: list[Any] = []
    _patch_trainer(args.pad_bytes, timings, trainers)
    _patch_base_model_name()
    if args.variant == PUSH:
        _patch_push_to_hub()
    api = HfApi()  # HF_ENDPOINT and HF_TOKEN come from the environment, as for a seed user
    settings = TrainerSettings(
        base_model="tiny", output_dir=args.output_dir, max_steps=args.max_steps,
        save_steps=args.save_steps, eval_steps=args.save_steps, report_to="none",
        f1_max_samples=F1_SAMPLES, cpu_threads=args.threads)
    result = train_module.run(settings,
                              callbacks=[_seed_callback(api)] if args.variant == SEED else [])
    upload_final(args.variant, api, result.final_dir, trainers[-1])
    timings["job_end"] = time.time()
    args.result.write_text(json.dumps({**timings, "global_step": result.global_step}))
    return 0

if __name__ == "__main__":
    sys.exit(main())
