"""Which precision runs fast here: bf16 only where the hardware has it natively, and is fast.

A CPU without AVX512-BF16 or AMX emulates bf16 arithmetic, which makes a bf16 flow several
times slower than fp32 (measured: about 6x on an AVX2-only Zen 3). The flag is not enough
either: an Intel Xeon VM that reports AVX512-BF16 ran bf16 GEMMs at 0.55x its fp32 rate and
every vocoder's bf16 synthesis 1.1-1.6x slower than fp32. So on a CPU ``Capabilities.detect``
also measures one GEMM in both precisions (at most about 50 ms, once per shape and process), and
bf16 counts as fast only where it beats fp32 there. The shape is the workload's own where it has
one (``Vocoder.generation_gemm``: a one-column WaveFlow's row conv is ``(1, 48) @ (48, 32)``,
where bf16 loses even on a CPU whose large GEMMs it runs 4x faster), else ``ROW_GEMM``.
``choose`` is a pure function of the reported ``Capabilities``, so every branch can be tested
on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "NATIVE_BF16_FLAGS",
    "PRECISIONS",
    "ROW_GEMM",
    "TORCH_DTYPES",
    "Capabilities",
    "autocast",
    "choose",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
ROW_GEMM = (1392, 576, 128)  # (m, k, n): one WaveFlow h16-r64 row conv of 1 s at 22.05 kHz


@dataclass(frozen=True)
class Capabilities:
    """What the hardware offers, as torch and the kernel report it.

    Args:
        cpu_capability: ``torch.backends.cpu.get_cpu_capability()`` (``AVX2``, ``AVX512``, ...).
        cpu_flags: the CPU's feature flags (``/proc/cpuinfo``), e.g. ``amx_bf16``.
        cuda_capability: the CUDA device's compute capability, or None on the CPU.
        bf16_speedup: on a CPU with native bf16, the measured bf16 GEMM rate over the fp32
            rate (``bf16_gemm_speedup``); None when not measured.
        gemm: the ``(m, k, n)`` that ``bf16_speedup`` was measured on.
    """

    cpu_capability: str
    cpu_flags: frozenset[str]
    cuda_capability: tuple[int, int] | None = None
    bf16_speedup: float | None = None
    gemm: tuple[int, int, int] = ROW_GEMM

    @classmethod
    def detect(
        cls,
        device: torch.device | str = "cpu",
        measure: bool = True,
        gemm: tuple[int, int, int] | None = None,
    ) -> Capabilities:
        """What ``device`` offers; ``measure``: time the bf16 GEMM probe where the CPU has the
        flag (only a choice between bf16 and fp32 needs it), on ``gemm`` (default
        ``ROW_GEMM``), the product the workload repeats most."""
        device = torch.device(device)
        gemm = gemm or ROW_GEMM
        cuda = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        flags = _cpu_flags()
        measured = measure and cuda is None and bool(NATIVE_BF16_FLAGS & flags)
        speedup = bf16_gemm_speedup(torch.get_num_threads(), gemm) if measured else None
        return cls(torch.backends.cpu.get_cpu_capability(), flags, cuda, speedup, tuple(gemm))

    def native_bf16(self) -> bool:
        if self.cuda_capability is not None:
            return self.cuda_capability >= (8, 0)
        return bool(NATIVE_BF16_FLAGS & self.cpu_flags)

    def fast_bf16(self) -> bool:
        """Native, and on a CPU not measured slower than fp32."""
        slow = self.bf16_speedup is not None and self.bf16_speedup < 1.0
        return self.native_bf16() and not (self.cuda_capability is None and slow)

    def describe(self) -> str:
        if self.cuda_capability is not None:
            major, minor = self.cuda_capability
            return f"CUDA compute capability {major}.{minor}"
        native = sorted(NATIVE_BF16_FLAGS & self.cpu_flags)
        m, k, n = self.gemm
        measured = (
            ""
            if self.bf16_speedup is None
            else f" (bf16 GEMM ({m}, {k}) @ ({k}, {n}) at {self.bf16_speedup:.2f}x fp32)"
        )
        return f"CPU {self.cpu_capability}, native bf16: {', '.join(native) or 'none'}{measured}"


@functools.lru_cache(maxsize=16)
def bf16_gemm_speedup(threads: int, gemm: tuple[int, int, int] = ROW_GEMM) -> float:
    """The bf16 over the fp32 rate of ``(m, k) @ (k, n)`` on the CPU: the median of the timed
    products (20, or more for a small one, so that each side takes about 10 ms), after 3
    warm-ups. The operands are constants: probing must not draw from the global RNG, or a
    seeded run would depend on the machine it runs on."""
    del threads  # the cache key: the rate depends on the thread count
    m, k, n = gemm
    repeats = max(20, min(2000, int(1e7 // max(1, m * k * n))))
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.full((m, k), 0.5, dtype=dtype), torch.full((k, n), 0.25, dtype=dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        seconds[dtype] = statistics.median(times)
    return seconds[torch.float32] / seconds[torch.bfloat16]


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

    ``auto`` picks bf16 where it is native (CUDA 8.0+, a CPU with AVX512-BF16 or AMX) and not
    measured slower than fp32, and fp32 elsewhere. An explicit half precision without hardware
    support, or measured slower, runs, with a warning.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    on_cuda = capabilities.cuda_capability is not None
    if requested == "auto":
        return ("bf16" if capabilities.fast_bf16() else "fp32"), None
    if requested == "bf16" and not capabilities.native_bf16():
        return "bf16", (
            f"bf16 is emulated here ({capabilities.describe()}) and slower than fp32; "
            "--dtype auto picks the faster one"
        )
    if requested == "bf16" and not capabilities.fast_bf16():
        return "bf16", (
            f"bf16 measured slower than fp32 here ({capabilities.describe()}); "
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
