"""The trainer's settings: defaults < `TRAINER_*` environment variables < command-line flags.

The names both containers share (`HF_ENDPOINT`, `HUB_NAMESPACE`, `HUB_REPO_PREFIX`,
`WANDB_PROJECT`, `WANDB_RUN_GROUP`) are read verbatim, without the `TRAINER_` prefix. The Hub
token is deliberately not a setting: it is read from `HF_TOKEN`/`HF_TOKEN_FILE` by the CLI
(`shared.env.read_token`) so that no flag, settings dump or `TrainingArguments` ever holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, NoDecode, SettingsConfigDict, SettingsError

from shared import env
from shared.naming import DEFAULT_PREFIX, RepoNameError, validate_part, validate_prefix

TINY_MODEL = "tiny"
# PEFT's own keyword for every linear layer except the output head; passed as this string.
ALL_LINEAR = "all-linear"
DEFAULT_BASE_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
DEFAULT_OUTPUT_DIR = Path("./llama3-medical-ner-lora")
DEFAULT_WANDB_PROJECT = "llama3-medical-ner"
PROG_NAME = "ckpt-trainer"


def _shared(name: str, field: str) -> AliasChoices:
    """Accept the shared env name verbatim and the field name (the CLI flag) for one setting."""
    return AliasChoices(field, name)


class TrainerSettings(BaseSettings):
    """Everything one training run needs, validated once at the CLI boundary."""

    model_config = SettingsConfigDict(
        env_prefix="TRAINER_",
        cli_prog_name=PROG_NAME,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_exit_on_error=False,
        populate_by_name=True,
        env_ignore_empty=True,  # compose passes unset variables through as empty strings
        frozen=True,
        extra="ignore",
    )

    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description=f"Hub model id or local folder; '{TINY_MODEL}': the shipped tiny Llama "
        "(pretrained on the shipped synthetic data, for CPU demos and tests), downloads nothing",
    )
    dataset: str | None = Field(
        None,
        description="a Hub dataset id, a local folder or a data file (parquet, JSON, JSONL, CSV: "
        "whatever datasets.load_dataset reads) of token/BIO records (tokens + ner_tags) or "
        "instruction records (text + entities); default: the synthetic dataset in trainer/data",
    )
    dataset_config: str | None = Field(
        None, description="the dataset's configuration (subset) name, where it has several"
    )
    train_split: str = Field("train", description="split to train on")
    validation_split: str | None = Field(
        None, description="split to evaluate on (default: validation, valid, val, dev or test)"
    )
    validation_file: Path | None = Field(
        None, description="validation data file when --dataset names a single file"
    )
    ner_labels: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="label names for integer ner_tags without a ClassLabel feature, in id order "
        "(comma-separated, e.g. O,B-Disease,I-Disease)",
    )
    output_dir: Path = Field(DEFAULT_OUTPUT_DIR, description="where checkpoints are written")
    resume: Literal["latest", "hub"] | None = Field(
        None,
        description="'latest': the newest local checkpoint whose marker matches its files; "
        "'hub': the same, or else this run's newest verified checkpoint repo on the Hub",
    )

    per_device_train_batch_size: int = Field(4, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(4, ge=1)
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="overrides the epochs when > 0")
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: float = Field(0.03, ge=0, description="steps, or a ratio when < 1")
    lr_scheduler_type: str = "linear"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(50, ge=1)
    eval_steps: int = Field(50, ge=1)
    save_total_limit: int | None = Field(None, ge=1, description="local checkpoints to keep")
    seed: int = 42
    max_seq_length: int = Field(512, ge=16)
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)

    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description=f"comma-separated module names, or {ALL_LINEAR} (every linear layer but the "
        "output head)",
    )

    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load the base model in 4 bits (bitsandbytes NF4, double "
        "quantisation, bf16 compute where supported); needs a CUDA GPU and bitsandbytes",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% slower"
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="weights and mixed precision; auto: bf16 on a GPU that supports it natively, "
        "else fp16 on a GPU, fp32 on CPU",
    )
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto",
        description="attention kernel; auto: the model's default (sdpa); flash_attention_2 needs "
        "the flash-attn package, a CUDA GPU and bf16 or fp16",
    )
    optim: str = Field(
        "auto",
        description="a transformers optimizer name (e.g. adamw_torch, paged_adamw_8bit); auto: "
        "paged_adamw_8bit with --load-in-4bit, else the transformers default",
    )
    packing: bool = Field(
        False,
        description="concatenate each batch into one padding-free row (position ids restart per "
        "example; best with flash_attention_2)",
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="torch threads on CPU (default: 1 for the tiny model, else torch's)"
    )

    f1_max_samples: int | None = Field(
        None, ge=1, description="validation records for the final F1 (default: all)"
    )
    f1_batch_size: int = Field(32, ge=1)
    f1_max_new_tokens: int = Field(128, ge=1)
    stop_after_step: int | None = Field(
        None,
        ge=1,
        description="simulate a preemption: stop after this step with the schedule unchanged, "
        "save no final adapter and record the run as failed",
    )

    report_to: Literal["wandb", "none"] = "none"
    wandb_project: str = Field(
        DEFAULT_WANDB_PROJECT, validation_alias=_shared(env.WANDB_PROJECT, "wandb_project")
    )
    wandb_group: str | None = Field(
        None,
        validation_alias=_shared(env.WANDB_RUN_GROUP, "wandb_group"),
        description="default: the run id",
    )
    hf_endpoint: str = Field(
        env.DEFAULT_ENDPOINT, validation_alias=_shared(env.HF_ENDPOINT, "hf_endpoint")
    )
    hub_namespace: str | None = Field(
        None,
        validation_alias=_shared(env.HUB_NAMESPACE, "hub_namespace"),
        description="default: the token's user",
    )
    hub_repo_prefix: str = Field(
        DEFAULT_PREFIX, validation_alias=_shared(env.HUB_REPO_PREFIX, "hub_repo_prefix")
    )

    @field_validator("lora_target_modules", "ner_labels", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("resume", mode="before")
    @classmethod
    def _no_resume(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "no", "null"):
            return None
        return value

    @field_validator("hub_namespace")
    @classmethod
    def _check_namespace(cls, value: str | None) -> str | None:
        return None if value is None else validate_part(value, "namespace")

    @field_validator("hub_repo_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return validate_prefix(value)

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainerSettings:
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module")
        if ALL_LINEAR in self.lora_target_modules and len(self.lora_target_modules) > 1:
            raise ValueError(f"lora_target_modules: {ALL_LINEAR} stands alone, without other names")
        if self.validation_file is not None and self.dataset is None:
            raise ValueError("validation_file needs dataset (the training data file) as well")
        return self

    @property
    def lora_targets(self) -> str | list[str]:
        """What PEFT's `target_modules` expects: the string `all-linear`, or a list of names."""
        if self.lora_target_modules == [ALL_LINEAR]:
            return ALL_LINEAR
        return list(self.lora_target_modules)

    @property
    def is_tiny(self) -> bool:
        return self.base_model == TINY_MODEL


class SettingsInputError(ValueError):
    """Settings that cannot be used; the message is one line naming the setting and the fix."""


def _env_name(field_name: str) -> str:
    info = TrainerSettings.model_fields.get(field_name)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        shared_names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if shared_names:
            return shared_names[0]
    return f"TRAINER_{field_name.upper()}"


def _flag(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0])
    if name.isupper():  # reported under its shared env name
        name = next((f for f in TrainerSettings.model_fields if _env_name(f) == name), name)
    return f"--{name.replace('_', '-')} ({_env_name(name)})"


def describe_validation_error(exc: ValidationError) -> str:
    """One line: the first failing setting, as flag and env var, and what it needs."""
    error = exc.errors()[0]
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"invalid settings: {message}"
    return f"{_flag(error['loc'])}: {message} (got {error.get('input')!r})"


def parse_settings(argv: list[str] | None) -> TrainerSettings:
    """Settings from flags and the environment; SettingsInputError with a one-line message."""
    try:
        return CliApp.run(TrainerSettings, cli_args=[] if argv is None else argv)
    except ValidationError as exc:
        raise SettingsInputError(describe_validation_error(exc)) from None
    except (SettingsError, RepoNameError) as exc:
        raise SettingsInputError(str(exc).splitlines()[0]) from None
