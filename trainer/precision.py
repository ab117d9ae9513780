"""`--dtype` resolved for this machine: the dtype the base weights load in and the Trainer's
mixed-precision flag."""

from __future__ import annotations

import enum

import torch

from trainer.machine import Machine


class Precision(enum.Enum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16,
                Precision.FP32: torch.float32}[self]


def resolve(choice: str, machine: Machine) -> Precision:
    """auto: bf16 where the GPU has it natively, fp16 on an older GPU, fp32 on CPU."""
    if choice != "auto":
        return Precision(choice)
    if not machine.cuda:
        return Precision.FP32
    return Precision.BF16 if machine.bf16_native else Precision.FP16
