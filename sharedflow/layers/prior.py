"""A learned affine prior with constant parameters (Glow's ``learn_top``).

``z = x exp(s) + t`` with ``(s, t) = param(net(0))``: the network is applied to a fixed zero input
of shape ``(1, *in_shape)``, so only its biases and output scale matter (Glow-PyTorch computes
the top prior's mean and log-scale this way; the unused weights are kept for parameter and
checkpoint parity). With a standard normal base this is ``N(-t exp(-s), exp(-2 s))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context, sum_except_batch
from sharedflow.layers.affine import AffineParam

__all__ = ["LearnedPrior"]


class LearnedPrior(Bijection):
    """``z = x exp(s) + t`` with parameters from ``net`` on zeros (see the module docstring)."""

    def __init__(self, net: nn.Module, in_shape: Sequence[int], param: AffineParam) -> None:
        super().__init__()
        self.net = net
        self.in_shape = tuple(in_shape)
        self.param = param

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(1, *self.in_shape, device=x.device, dtype=x.dtype)
        return self.param(self.net(zeros), 1)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        s, t = self._params(x)
        return x * torch.exp(s) + t, sum_except_batch(s.expand_as(x))

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        s, t = self._params(z)
        return (z - t) * torch.exp(-s), -sum_except_batch(s.expand_as(z))
