"""What every benchmark here reports beside its times: the hardware, a GEMM probe, the work.

``describe``: the GPU's name, or the CPU's capability and whether it has native bf16.
``gemm_rate``: GFLOP/s of one ``(m, k) @ (k, n)`` product in a dtype, a median of ``repeats``;
a shared VM drifts by up to ~2x, so a figure compares only at a similar probe rate.
``count_flops``: one call's matrix-product and convolution work, as torch's FLOP counter
counts it (forward and backward: where the compute goes).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_rate(
    device: torch.device, dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 50
) -> float:
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from sharedflow.precision import Capabilities

    return Capabilities.detect("cpu").describe()
