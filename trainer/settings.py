"""The trainer's settings: defaults < `TRAINER_*` environment variables < command-line flags.

The names both containers share (`HF_ENDPOINT`, `HUB_NAMESPACE`, `HUB_REPO_PREFIX`,
`WANDB_PROJECT`, `WANDB_RUN_GROUP`) are read verbatim, without the `TRAINER_` prefix. The Hub
token is deliberately not a setting: it is read from `HF_TOKEN`/`HF_TOKEN_FILE` by the CLI
(`shared.env.read_token`) so that no flag, settings dump or `TrainingArguments` ever holds it.

`--help` is pydantic-settings' own parser; `_HelpLayout` only sorts the options into sections
(HELP_GROUPS) and writes each help from the field: its description, then its default as typed.
"""

from __future__ import annotations

from argparse import Action, ArgumentParser
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliApp,
    CliSettingsSource,
    NoDecode,
    SettingsConfigDict,
    SettingsError,
)

from shared import env
from shared.naming import DEFAULT_PREFIX, RepoNameError, validate_part, validate_prefix

TINY_MODEL = "tiny"
# PEFT's own keyword for every linear layer except the output head; passed as this string.
ALL_LINEAR = "all-linear"
DEFAULT_BASE_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
DEFAULT_OUTPUT_DIR = Path("./llama3-medical-ner-lora")
DEFAULT_WANDB_PROJECT = "llama3-medical-ner"
PROG_NAME = "ckpt-trainer"


# `--help`'s text before the options, printed as it stands (so wrapped for 80 columns here).
HELP_DESCRIPTION = """\
Fine-tune a LoRA adapter of the base model to extract medical entities as JSON:
checkpoints go to --output-dir for the uploader sidecar, then the final adapter
and its entity F1.

Every option is also an environment variable, TRAINER_<OPTION> (for example
TRAINER_BASE_MODEL=tiny), except five shared with the uploader: HF_ENDPOINT,
HUB_NAMESPACE, HUB_REPO_PREFIX, WANDB_PROJECT and WANDB_RUN_GROUP. Flags win over
the environment, the environment over ./.env. The Hub token is no option: it is
read from HF_TOKEN, else from the file named by HF_TOKEN_FILE."""

# (title, fields) in the order `--help` lists its sections; the fields are declared in this order
# too, so the README's table (tests/deploy/trainer_docs.py) follows it. A field in none of them
# lands in "other options".
HELP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model and precision", ("base_model", "dtype", "load_in_4bit", "attn_implementation",
                             "gradient_checkpointing", "packing", "cpu_threads")),
    ("data", ("dataset", "dataset_config", "train_split", "validation_split", "validation_file",
              "ner_labels", "max_seq_length", "max_train_samples", "max_eval_samples")),
    ("training schedule", ("per_device_train_batch_size", "gradient_accumulation_steps",
                           "num_train_epochs", "max_steps", "learning_rate", "warmup_steps",
                           "lr_scheduler_type", "optim", "seed", "logging_steps")),
    ("checkpoints and resuming", ("output_dir", "save_steps", "save_total_limit", "resume",
                                  "stop_after_step")),
    ("LoRA", ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")),
    ("evaluation", ("eval_steps", "per_device_eval_batch_size", "f1_max_samples",
                    "f1_batch_size", "f1_max_new_tokens")),
    ("W&B", ("report_to", "wandb_project", "wandb_group")),
    ("Hub", ("hf_endpoint", "hub_namespace", "hub_repo_prefix")),
)
GROUP_OF = {name: title for title, names in HELP_GROUPS for name in names}
OTHER_GROUP = "other options"


def _shared(name: str, field: str) -> AliasChoices:
    """Accept the shared env name verbatim and the field name (the CLI flag) for one setting."""
    return AliasChoices(field, name)


class TrainerSettings(BaseSettings):
    """Everything one training run needs, validated once at the CLI boundary.

    Each description is the option's `--help` text; one whose default is None says what applies
    then, as `(default: ...)`, since `--help` adds the default only when there is one.
    """

    model_config = SettingsConfigDict(
        env_prefix="TRAINER_",
        cli_prog_name=PROG_NAME,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_exit_on_error=False,
        cli_hide_none_type=True,  # metavars `str`, `{latest,hub}` rather than `{str,null}`
        populate_by_name=True,
        env_ignore_empty=True,  # compose passes unset variables through as empty strings
        frozen=True,
        extra="ignore",
        json_schema_extra={"description": HELP_DESCRIPTION},  # `--help`'s text, also under -OO
    )

    # model and precision
    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description=f"Hub model id or local folder; '{TINY_MODEL}': the shipped tiny Llama "
        "(pretrained on the shipped synthetic data, for CPU demos and tests), downloads nothing",
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="weights and mixed precision; auto: bf16 on a GPU that supports it natively, "
        "else fp16 on a GPU, fp32 on CPU",
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load the base model in 4 bits (bitsandbytes NF4, double "
        "quantisation, bf16 compute where supported); needs a CUDA GPU and bitsandbytes",
    )
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto",
        description="attention kernel; auto: the model's default (sdpa); flash_attention_2 needs "
        "the flash-attn package, a CUDA GPU and bf16 or fp16",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% slower"
    )
    packing: bool = Field(
        False,
        description="concatenate each batch into one padding-free row (position ids restart per "
        "example; best with flash_attention_2)",
    )
    cpu_threads: int | None = Field(
        None, ge=1,
        description="CPU threads for torch, set with torch.set_num_threads (default: 1 for the "
        "tiny model without a GPU, else torch's own number)",
    )

    # data
    dataset: str | None = Field(
        None,
        description="training data: a Hub dataset id (downloaded from --hf-endpoint), a local "
        "folder or a data file (parquet, JSON, JSONL, CSV: whatever datasets.load_dataset reads) "
        "of token/BIO records (tokens + ner_tags) or instruction records (text + entities) "
        "(default: the synthetic dataset shipped in trainer/data)",
    )
    dataset_config: str | None = Field(
        None,
        description="the dataset's configuration (subset) name, where it has several "
        "(default: its default configuration)",
    )
    train_split: str = Field("train", description="split to train on")
    validation_split: str | None = Field(
        None,
        description="split for the eval loss and the final F1 (default: the first of "
        "validation, valid, val, dev and test that the dataset has)",
    )
    validation_file: Path | None = Field(
        None,
        description="validation data file, needed when --dataset names a single data file "
        "(default: none)",
    )
    ner_labels: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="label names of integer ner_tags, in id order, for a dataset without a "
        "ClassLabel feature (comma-separated, e.g. O,B-Disease,I-Disease) (default: the "
        "dataset's ClassLabel names)",
        json_schema_extra={"metavar": "LABEL,..."},
    )
    max_seq_length: int = Field(
        512, ge=16,
        description="tokens per example, prompt + answer: longer answers are cut, examples "
        "whose prompt alone is longer are dropped",
    )
    max_train_samples: int | None = Field(
        None, ge=1, description="train on the first N training records only (default: all)"
    )
    max_eval_samples: int | None = Field(
        None, ge=1,
        description="use the first N validation records only, for the eval loss and the final "
        "F1 (default: all)",
    )

    # training schedule
    per_device_train_batch_size: int = Field(
        4, ge=1,
        description="training examples per device in each forward pass; the seed's 4 x "
        "--gradient-accumulation-steps 4 makes 16 per optimizer step and device",
    )
    gradient_accumulation_steps: int = Field(
        4, ge=1, description="forward passes whose gradients add up to one optimizer step"
    )
    num_train_epochs: float = Field(
        3.0, gt=0,
        description="passes over the training data (a fraction is allowed); ignored when "
        "--max-steps > 0",
    )
    max_steps: int = Field(
        -1, description="optimizer steps to train for; overrides --num-train-epochs when > 0"
    )
    learning_rate: float = Field(
        2e-4, gt=0, description="peak learning rate, reached at the end of the warmup"
    )
    warmup_steps: float = Field(
        0.03, ge=0,
        description="linear learning-rate warmup: optimizer steps, or a ratio of all the steps "
        "when < 1 (0.03: the first 3%)",
    )
    lr_scheduler_type: str = Field(
        "linear",
        description="learning-rate schedule after the warmup, a transformers SchedulerType "
        "(linear decays to 0; cosine, constant, ...)",
    )
    optim: str = Field(
        "auto",
        description="a transformers optimizer name (e.g. adamw_torch, paged_adamw_8bit); auto: "
        "paged_adamw_8bit with --load-in-4bit, else the transformers default",
    )
    seed: int = Field(
        42, description="random seed for the LoRA initialisation, data order and dropout"
    )
    logging_steps: int = Field(
        10, ge=1,
        description="log the training loss and learning rate every N optimizer steps",
    )

    # checkpoints and resuming
    output_dir: Path = Field(
        DEFAULT_OUTPUT_DIR,
        description="where the checkpoint-N folders, their completion markers, the run info "
        "and final/ (the adapter and its F1) are written; the folder the uploader watches",
    )
    save_steps: int = Field(
        50, ge=1, description="save a checkpoint every N optimizer steps"
    )
    save_total_limit: int | None = Field(
        None, ge=1,
        description="keep only the N newest local checkpoints, deleting older ones (default: "
        "keep all; leave it unset when the uploader prunes)",
    )
    resume: Literal["latest", "hub"] | None = Field(
        None,
        description="continue the run recorded in --output-dir; 'latest': from the newest local "
        "checkpoint whose marker matches its files, or a finished save a preemption left "
        "unmarked (it is marked then); 'hub': that, or a newer verified checkpoint "
        "of this run downloaded from its Hub repo (default: none, a new run)",
    )
    stop_after_step: int | None = Field(
        None,
        ge=1,
        description="simulate a preemption: stop after this step with the schedule unchanged, "
        "save no final adapter, record the run as failed and exit with 3 (default: run to the "
        "end)",
    )

    # LoRA
    lora_r: int = Field(16, ge=1, description="LoRA rank of the update matrices")
    lora_alpha: int = Field(
        32, ge=1, description="LoRA scaling: updates are scaled by alpha / r (32 / 16 = 2)"
    )
    lora_dropout: float = Field(
        0.05, ge=0, lt=1, description="dropout on the LoRA layers' input (0 to < 1)"
    )
    lora_target_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description=f"comma-separated module names, or {ALL_LINEAR} (every linear layer but the "
        "output head)",
        json_schema_extra={"metavar": "MODULE,..."},
    )

    # evaluation
    eval_steps: int = Field(
        50, ge=1,
        description="compute the eval loss on the validation split every N optimizer steps",
    )
    per_device_eval_batch_size: int = Field(
        8, ge=1, description="validation examples per device in each forward pass of the eval"
    )
    f1_max_samples: int | None = Field(
        None, ge=1,
        description="validation records scored for the final entity F1, after training "
        "(default: all)",
    )
    f1_batch_size: int = Field(
        32, ge=1, description="prompts per generation batch for the final F1"
    )
    f1_max_new_tokens: int = Field(
        128, ge=1,
        description="tokens generated at most per answer for the final F1 (a cut answer may "
        "not parse)",
    )

    # W&B
    report_to: Literal["wandb", "none"] = Field(
        "none",
        description="wandb: log the training metrics and the final F1 to a W&B run (main "
        "process only; WANDB_MODE, WANDB_API_KEY as W&B reads them); none: no tracking",
    )
    wandb_project: str = Field(
        DEFAULT_WANDB_PROJECT, validation_alias=_shared(env.WANDB_PROJECT, "wandb_project"),
        description="W&B project; recorded in the run info, where the uploader finds it",
    )
    wandb_group: str | None = Field(
        None,
        validation_alias=_shared(env.WANDB_RUN_GROUP, "wandb_group"),
        description="W&B run group, shared with the uploader's run (default: the run id; a "
        "resumed run keeps its group)",
    )

    # Hub
    hf_endpoint: str = Field(
        env.DEFAULT_ENDPOINT, validation_alias=_shared(env.HF_ENDPOINT, "hf_endpoint"),
        description="Hub URL for --dataset downloads and --resume hub (the base model and its "
        "tokenizer come through transformers, which reads the HF_ENDPOINT variable itself)",
    )
    hub_namespace: str | None = Field(
        None,
        validation_alias=_shared(env.HUB_NAMESPACE, "hub_namespace"),
        description="user or organisation whose checkpoint repos --resume hub searches, as the "
        "uploader's --namespace (default: the token's user)",
    )
    hub_repo_prefix: str = Field(
        DEFAULT_PREFIX, validation_alias=_shared(env.HUB_REPO_PREFIX, "hub_repo_prefix"),
        description="name prefix of the checkpoint repos --resume hub searches "
        "(<prefix>-checkpoint-<step>-<time>), as the uploader's --repo-prefix",
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


def typed_default(value: Any) -> str | None:
    """A default as one would type it (`./llama3-medical-ner-lora`, `q_proj,v_proj`, `3`, `false`);
    None for no default."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PurePath):
        # Path("./x") prints as "x"; the "./" says it is relative to the working directory.
        return str(value) if value.is_absolute() else f"./{value}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def option_help(field: FieldInfo) -> str:
    """An option's `--help` text: its description, then `(default: ...)` as typed.

    A default of None adds nothing: the description says what applies then (pydantic-settings
    would print `(default: null)`, and `(default factory: ...)` for a factory)."""
    shown = typed_default(field.get_default(call_default_factory=True, validated_data={}))
    text = field.description or ""
    return text if shown is None else f"{text} (default: {shown})"


class _HelpLayout:
    """The `add_argument_method` of pydantic-settings' CLI source: each option goes into its
    section (HELP_GROUPS), with its field's `metavar` (json_schema_extra) where it has one and
    the help of `option_help`. Flag names, dests, actions and parsing stay pydantic-settings'."""

    def __init__(self) -> None:
        self._sections: dict[str, Any] = {}

    def add_argument(self, parser: ArgumentParser, *names: str, **kwargs: Any) -> Action:
        dest = kwargs.get("dest")
        field = TrainerSettings.model_fields.get(dest) if isinstance(dest, str) else None
        if field is None:  # -h/--help
            return ArgumentParser.add_argument(parser, *names, **kwargs)
        if not self._sections:  # created up front, so they print in HELP_GROUPS' order
            self._sections = {title: parser.add_argument_group(title)
                              for title, _ in HELP_GROUPS}
        title = GROUP_OF.get(dest, OTHER_GROUP)
        if title not in self._sections:
            self._sections[title] = parser.add_argument_group(title)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if "metavar" in kwargs and "metavar" in extra:
            kwargs["metavar"] = extra["metavar"]
        kwargs["help"] = option_help(field).replace("%", "%%")  # argparse formats help with %
        return self._sections[title].add_argument(*names, **kwargs)


def cli_source() -> CliSettingsSource[TrainerSettings]:
    """pydantic-settings' CLI source for the settings, with the `--help` layout above.

    Built as `CliApp.run` builds its own, but for the layout: the source's own default is
    case-sensitive, BaseSettings' is not (`--HF-ENDPOINT` is read as `--hf-endpoint`)."""
    return CliSettingsSource(
        TrainerSettings,
        case_sensitive=TrainerSettings.model_config.get("case_sensitive", False),
        add_argument_method=_HelpLayout().add_argument,
    )


def parse_settings(argv: list[str] | None) -> TrainerSettings:
    """Settings from flags and the environment; SettingsInputError with a one-line message."""
    try:
        return CliApp.run(TrainerSettings, cli_args=[] if argv is None else argv,
                          cli_settings_source=cli_source())
    except ValidationError as exc:
        raise SettingsInputError(describe_validation_error(exc)) from None
    except (SettingsError, RepoNameError) as exc:
        raise SettingsInputError(str(exc).splitlines()[0]) from None
