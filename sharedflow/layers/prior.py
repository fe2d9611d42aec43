"""A learned affine prior with constant parameters (Glow's ``learn_top``).

``z = x exp(s) + t`` with ``(s, t) = param(net(0))``: the network is applied to a fixed zero input
of shape ``(1, *in_shape)``, so only its biases and output scale matter (Glow-PyTorch computes
the top prior's mean and log-scale this way; the unused weights are kept for parameter and
checkpoint parity). With a standard normal base this is ``N(-t exp(-s), exp(-2 s))``.

Class-conditional (``num_classes > 0``, Glow-PyTorch's ``y_condition``): the label's row of a
zero-initialised table ``(N, 2C)`` is added to ``net(0)`` at every position, so each class has
its own prior mean and scale per channel; labels ``y < 0`` or none take the mean row. As in
Glow, the net maps ``2C`` channels to ``2C``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context, sum_except_batch
from sharedflow.layers.affine import AffineParam
from sharedflow.nets.common import class_rows

__all__ = ["LearnedPrior"]


class LearnedPrior(Bijection):
    """``z = x exp(s) + t`` with parameters from ``net`` on zeros (see the module docstring)."""

    def __init__(
        self, net: nn.Module, in_shape: Sequence[int], param: AffineParam, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.net = net
        self.in_shape = tuple(in_shape)
        self.param = param
        self.class_table = (
            nn.Parameter(torch.zeros(num_classes, self.in_shape[0])) if num_classes else None
        )

    def _params(self, x: Tensor, labels: Context) -> tuple[Tensor, Tensor]:
        """``(s, t)``, ``(1, C, H, W)``, or ``(B, C, H, W)`` for a class-conditional prior."""
        h = self.net(torch.zeros(1, *self.in_shape, device=x.device, dtype=x.dtype))
        if self.class_table is not None:
            rows = class_rows(self.class_table, labels, x.shape[0]).to(h.dtype)
            h = h + rows[:, :, None, None]
        return self.param(h, 1)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        s, t = self._params(x, context)
        return x * torch.exp(s) + t, sum_except_batch(s.expand_as(x))

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        s, t = self._params(z, context)
        return (z - t) * torch.exp(-s), -sum_except_batch(s.expand_as(z))
