"""Options this machine cannot honour, refused with one line before anything is downloaded.

Each check names the option, what it needs and what to do instead; the CLI prints it as
`Error: ...` and exits 2, like any other invalid setting.
"""

from __future__ import annotations

from trainer.errors import UserError
from trainer.machine import BITSANDBYTES, FLASH_ATTN, Machine
from trainer.precision import Precision, resolve
from trainer.settings import TrainerSettings

AUTO = "auto"
# transformers' optimizer names implemented by bitsandbytes (CUDA only).
BNB_OPTIMIZERS = frozenset({
    "adamw_bnb_8bit", "adamw_8bit", "ademamix", "ademamix_8bit", "lion_8bit", "lion_32bit",
    "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit",
    "paged_lion_32bit", "paged_lion_8bit", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
})
QLORA_OPTIMIZER = "paged_adamw_8bit"


class PreflightError(UserError):
    """An option that cannot work on this machine."""


def resolved_optimizer(settings: TrainerSettings) -> str | None:
    """The optimizer to use; None leaves transformers' default."""
    if settings.optim != AUTO:
        return settings.optim
    return QLORA_OPTIMIZER if settings.load_in_4bit else None


def _known_optimizers() -> set[str]:
    from transformers.training_args import OptimizerNames

    return {o.value for o in OptimizerNames}


def check(settings: TrainerSettings, machine: Machine) -> Precision:
    """Raise PreflightError for the first option that cannot work here; else the precision."""
    precision = resolve(settings.dtype, machine)
    if settings.load_in_4bit:
        if not machine.cuda:
            raise PreflightError(
                "--load-in-4bit (TRAINER_LOAD_IN_4BIT) needs a CUDA GPU (bitsandbytes NF4) and "
                "none is visible; drop --load-in-4bit on this machine")
        if not machine.has(BITSANDBYTES):
            raise PreflightError(
                "--load-in-4bit (TRAINER_LOAD_IN_4BIT) needs the bitsandbytes package; "
                "pip install bitsandbytes")
    if precision is Precision.BF16 and machine.cuda and not machine.bf16_native:
        raise PreflightError(
            f"--dtype bf16 (TRAINER_DTYPE): this GPU ({machine.gpu_name}) has no native bf16; "
            "use --dtype fp16 or auto")
    if precision is Precision.FP16 and not machine.cuda:
        raise PreflightError(
            "--dtype fp16 (TRAINER_DTYPE): fp16 mixed precision needs a GPU; use --dtype fp32 "
            "or auto on CPU")
    if settings.attn_implementation == "flash_attention_2":
        if not machine.has(FLASH_ATTN):
            raise PreflightError(
                "--attn-implementation flash_attention_2 (TRAINER_ATTN_IMPLEMENTATION) needs the "
                "flash-attn package, which is not installed; use sdpa or pip install flash-attn")
        if not machine.cuda:
            raise PreflightError(
                "--attn-implementation flash_attention_2 (TRAINER_ATTN_IMPLEMENTATION) needs a "
                "CUDA GPU; use sdpa")
        if precision is Precision.FP32:
            raise PreflightError(
                "--attn-implementation flash_attention_2 (TRAINER_ATTN_IMPLEMENTATION) runs in "
                "bf16 or fp16 only; set --dtype bf16 or fp16, or use sdpa")
    optimizer = resolved_optimizer(settings)
    if optimizer is not None:
        if optimizer not in _known_optimizers():
            raise PreflightError(
                f"--optim (TRAINER_OPTIM): unknown optimizer {optimizer!r}; use a name from "
                "transformers' OptimizerNames, e.g. adamw_torch or paged_adamw_8bit")
        if optimizer in BNB_OPTIMIZERS and not (machine.cuda and machine.has(BITSANDBYTES)):
            raise PreflightError(
                f"--optim {optimizer} (TRAINER_OPTIM) needs bitsandbytes on a CUDA GPU; "
                "use adamw_torch here")
    return precision
