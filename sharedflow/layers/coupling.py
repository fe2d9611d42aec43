"""Coupling layers (NICE, RealNVP, Glow, WaveGlow).

The channels (dim 1) split into ``x_a = x[:, :n_a]``, which passes unchanged and feeds the
conditioner, and ``x_b = x[:, n_a:]``, transformed elementwise:
``z_b = x_b exp(s) + t`` with ``(s, t) = param(conditioner(x_a, context))``,
``log|det| = sum(s)``. The conditioner maps ``(B, n_a, ...)`` to
``(B, param.n_params * n_b, ...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context, sum_except_batch
from sharedflow.layers.affine import AffineParam, ExpAffine, Shift

__all__ = ["AdditiveCoupling", "AffineCoupling"]


class AffineCoupling(Bijection):
    """Affine coupling with the conditioner passed in (see module docstring).

    Args:
        conditioner: ``(x_a (B, n_a, ...), context) -> h (B, n_params * n_b, ...)``.
        n_a: channels that condition; the default (``None``) is ``C // 2``, WaveGlow's and Glow's.
        param: how ``h`` becomes ``(log_scale, shift)``.
    """

    def __init__(
        self, conditioner: nn.Module, n_a: int | None = None, param: AffineParam | None = None
    ) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.n_a = n_a
        self.param = param if param is not None else ExpAffine()

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n_a = x.shape[1] // 2 if self.n_a is None else self.n_a
        return x[:, :n_a], x[:, n_a:]

    def _params(self, x_a: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        return self.param(self.conditioner(x_a, context), 1)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        log_scale, shift = self._params(x_a, context)
        z_b = x_b * torch.exp(log_scale) + shift
        return torch.cat([x_a, z_b], dim=1), sum_except_batch(log_scale)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        z_a, z_b = self._split(z)
        log_scale, shift = self._params(z_a, context)
        x_b = (z_b - shift) * torch.exp(-log_scale)
        return torch.cat([z_a, x_b], dim=1), -sum_except_batch(log_scale)


class AdditiveCoupling(AffineCoupling):
    """NICE's volume-preserving ``z_b = x_b + t(x_a)``; the conditioner outputs ``n_b``."""

    def __init__(self, conditioner: nn.Module, n_a: int | None = None) -> None:
        super().__init__(conditioner, n_a, Shift())
