"""`TrainingArguments` from settings. They never carry a Hub token: `training_args.bin`, a pickle
of them, is saved into every checkpoint and uploaded with it.

The signature keeps `bf16` as a keyword and `fp16` optional: bench/trainer_child.py wraps this
function as `(settings, *, bf16, run_name)`.
"""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from trainer.model import CHECKPOINTING_KWARGS
from trainer.preflight import resolved_optimizer
from trainer.settings import TrainerSettings


def training_arguments(
    settings: TrainerSettings, *, bf16: bool, run_name: str, fp16: bool = False
) -> TrainingArguments:
    optimizer = resolved_optimizer(settings)
    extra = {"optim": optimizer} if optimizer is not None else {}
    return TrainingArguments(
        output_dir=str(settings.output_dir),
        per_device_train_batch_size=settings.per_device_train_batch_size,
        per_device_eval_batch_size=settings.per_device_eval_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type=settings.lr_scheduler_type,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        eval_strategy="steps",
        eval_steps=settings.eval_steps,
        bf16=bf16,
        fp16=fp16,
        activation_checkpointing=settings.gradient_checkpointing,
        activation_checkpointing_kwargs=CHECKPOINTING_KWARGS,
        seed=settings.seed,
        report_to=["wandb"] if settings.report_to == "wandb" else "none",
        run_name=run_name,
        label_names=["labels"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        push_to_hub=False,
        hub_token=None,
        **extra,
    )
