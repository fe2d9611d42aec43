"""Linear maps packed once for oneDNN: the products of a token-by-token loop on a CPU.

TarFlow's KV-cache sampling multiplies the 8-16 rows of one token by every weight of every
layer, thousands of times per batch of images. At so few rows torch's ``linear`` runs far below
the machine's GEMM rate. oneDNN's matmul on a weight reordered once into its own blocked layout
is 25-40% faster there, with AVX-512 and with AVX2 kernels, and it can apply GELU as it writes
the output: a ``(16, 256) @ (256, 1024)`` product with its GELU took 71 us against 143 us for
``gelu(linear(x))`` on a 2-core AMD EPYC.

``PackedLinear(linear, rows, gelu)`` computes ``x W^T + b`` (then the exact, erf GELU where
``gelu``) for ``x (..., in)`` -> ``(..., out)``; it equals the plain map to float32 rounding.
It reads the weight as it is when packed; ``packed_for(owner, rows, build)`` keeps what
``build`` packs for a module until one of its parameters is replaced or changed in place (its
address or version counter moves), so sampling again reuses the packing (about 0.45 ms per
weight of TarFlow small); the packed copy lives as long as the module does.

``packable(x)``: whether ``x`` can take this path (a float32 CPU tensor, no gradient asked for,
no CPU autocast, and a torch build with oneDNN's linear ops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

__all__ = ["PackedLinear", "packable", "packed_for"]

T = TypeVar("T")


def _has_ops() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(torch.ops.mkldnn, op) for op in ("_linear_pointwise", "_reorder_linear_weight")
        )
    except (AttributeError, RuntimeError):
        return False


HAS_ONEDNN_LINEAR = _has_ops()


def packable(x: Tensor) -> bool:
    return (
        HAS_ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


class PackedLinear:
    """``linear`` (then GELU) on a weight packed for oneDNN; see the module docstring."""

    def __init__(self, linear: nn.Linear, rows: int, gelu: bool = False) -> None:
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.weight, self.bias, self.attr, [], self.algorithm
        )


_PACKED: WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], object]] = WeakKeyDictionary()


def packed_for(owner: nn.Module, rows: int, build: Callable[[], T]) -> T:
    """``build()``, reused for ``owner`` while ``rows`` and its parameters stay the same."""
    key = (rows, *(n for p in owner.parameters() for n in (p.data_ptr(), p._version)))
    hit = _PACKED.get(owner)
    if hit is None or hit[0] != key:
        hit = (key, build())
        _PACKED[owner] = hit
    return hit[1]  # type: ignore[return-value]
