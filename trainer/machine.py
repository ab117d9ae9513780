"""What this machine can do for training: a CUDA GPU, native bf16, and the optional packages
(bitsandbytes, flash-attn) some options need. Detected once; tests pass their own `Machine`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

BITSANDBYTES = "bitsandbytes"
FLASH_ATTN = "flash_attn"


@dataclass(frozen=True)
class Machine:
    cuda: bool
    # Native bf16 (Ampere and newer); emulated bf16 on older GPUs is slower than fp16.
    bf16_native: bool = False
    gpu_name: str | None = None
    packages: frozenset[str] = frozenset()

    def has(self, package: str) -> bool:
        return package in self.packages


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def detect() -> Machine:
    import torch

    packages = frozenset(p for p in (BITSANDBYTES, FLASH_ATTN) if _installed(p))
    if not torch.cuda.is_available():
        return Machine(cuda=False, packages=packages)
    return Machine(
        cuda=True,
        bf16_native=torch.cuda.is_bf16_supported(including_emulation=False),
        gpu_name=torch.cuda.get_device_name(0),
        packages=packages,
    )
