"""Elementwise affine parameterisations shared by coupling and autoregressive layers.

A network output ``h`` becomes the canonical pair ``(log_scale, shift)`` of
``z = x * exp(log_scale) + shift`` (data to latent). The classes differ in how ``h`` is read:

- ``ExpAffine``: ``log_scale = c tanh(s / c)`` (soft clamp, off when ``c`` is None), ``shift = t``;
  WaveGlow and WaveFlow.
- ``SigmoidAffine``: Glow's ``z = (x + t) * sigmoid(s + 2)``.
- ``InverseAffine``: TarFlow's and Glow's split prior ``z = (x - t) * exp(-s)``.
- ``Shift``: additive coupling ``z = x + t`` (NICE), volume preserving.

``order`` names how ``h`` holds its two halves along ``dim``: ``"scale_shift"`` (first half
scale), ``"shift_scale"``, or ``"interleaved"`` (even channels shift, odd scale, Glow's "cross").
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AffineParam", "ExpAffine", "InverseAffine", "Shift", "SigmoidAffine"]

Order = Literal["scale_shift", "shift_scale", "interleaved"]


def _halves(h: Tensor, dim: int, order: Order) -> tuple[Tensor, Tensor]:
    """Split ``h`` into ``(scale_part, shift_part)`` along ``dim``."""
    if order == "interleaved":
        n = h.shape[dim]
        idx = torch.arange(n, device=h.device)
        return h.index_select(dim, idx[1::2]), h.index_select(dim, idx[0::2])
    a, b = h.chunk(2, dim=dim)
    return (a, b) if order == "scale_shift" else (b, a)


class AffineParam:
    """Maps a network output to ``(log_scale, shift)``; ``n_params`` outputs per unit."""

    n_params: int = 2

    def __init__(self, order: Order = "scale_shift") -> None:
        self.order = order

    def __call__(self, h: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order!r})"


class ExpAffine(AffineParam):
    """``z = x exp(c tanh(s / c)) + t``; ``clamp=None`` gives the plain ``exp(s)``."""

    def __init__(self, order: Order = "scale_shift", clamp: float | None = None) -> None:
        super().__init__(order)
        self.clamp = clamp

    def __call__(self, h: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        s, t = _halves(h, dim, self.order)
        if self.clamp is not None:
            s = self.clamp * torch.tanh(s / self.clamp)
        return s, t


class SigmoidAffine(AffineParam):
    """Glow's ``z = (x + t) sigmoid(s + offset)``: ``log_scale = logsigmoid(s + offset)``."""

    def __init__(self, order: Order = "interleaved", offset: float = 2.0) -> None:
        super().__init__(order)
        self.offset = offset

    def __call__(self, h: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        s, t = _halves(h, dim, self.order)
        log_scale = F.logsigmoid(s + self.offset)
        return log_scale, t * torch.exp(log_scale)


class InverseAffine(AffineParam):
    """``z = (x - t) exp(-s)``: TarFlow's transform and a Gaussian prior ``N(t, exp(2 s))``."""

    def __call__(self, h: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        s, t = _halves(h, dim, self.order)
        return -s, -t * torch.exp(-s)


class Shift(AffineParam):
    """Additive ``z = x + t``: ``h`` is the shift itself, ``log_scale = 0``."""

    n_params = 1

    def __init__(self) -> None:
        super().__init__("shift_scale")

    def __call__(self, h: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(h), h
