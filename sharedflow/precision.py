"""Which precision runs fast here: bf16 only where the hardware has it natively.

A CPU without AVX512-BF16 or AMX emulates bf16 arithmetic, which makes a bf16 flow several
times slower than fp32 (measured: about 6x on an AVX2-only Zen 3). ``choose`` is a pure
function of the reported ``Capabilities``, so every branch can be tested on any machine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "NATIVE_BF16_FLAGS",
    "PRECISIONS",
    "TORCH_DTYPES",
    "Capabilities",
    "autocast",
    "choose",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Capabilities:
    """What the hardware offers, as torch and the kernel report it.

    Args:
        cpu_capability: ``torch.backends.cpu.get_cpu_capability()`` (``AVX2``, ``AVX512``, ...).
        cpu_flags: the CPU's feature flags (``/proc/cpuinfo``), e.g. ``amx_bf16``.
        cuda_capability: the CUDA device's compute capability, or None on the CPU.
    """

    cpu_capability: str
    cpu_flags: frozenset[str]
    cuda_capability: tuple[int, int] | None = None

    @classmethod
    def detect(cls, device: torch.device | str = "cpu") -> Capabilities:
        device = torch.device(device)
        cuda = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        return cls(torch.backends.cpu.get_cpu_capability(), _cpu_flags(), cuda)

    def native_bf16(self) -> bool:
        if self.cuda_capability is not None:
            return self.cuda_capability >= (8, 0)
        return bool(NATIVE_BF16_FLAGS & self.cpu_flags)

    def describe(self) -> str:
        if self.cuda_capability is not None:
            major, minor = self.cuda_capability
            return f"CUDA compute capability {major}.{minor}"
        native = sorted(NATIVE_BF16_FLAGS & self.cpu_flags)
        return f"CPU {self.cpu_capability}, native bf16: {', '.join(native) or 'none'}"


def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def choose(requested: str, capabilities: Capabilities) -> tuple[str, str | None]:
    """The precision to run (``fp32``, ``bf16`` or ``fp16``) and a warning, or None.

    ``auto`` picks bf16 where it is native (CUDA 8.0+, a CPU with AVX512-BF16 or AMX) and
    fp32 elsewhere. An explicit half precision without hardware support runs, with a warning.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    on_cuda = capabilities.cuda_capability is not None
    if requested == "auto":
        return ("bf16" if capabilities.native_bf16() else "fp32"), None
    if requested == "bf16" and not capabilities.native_bf16():
        return "bf16", (
            f"bf16 is emulated here ({capabilities.describe()}) and slower than fp32; "
            "--dtype auto picks the faster one"
        )
    if requested == "fp16" and not on_cuda:
        return "fp16", "fp16 is emulated on the CPU and slower than fp32"
    return requested, None


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Matrix products and convolutions in ``precision`` on ``device``; fp32 changes nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=TORCH_DTYPES[precision])
