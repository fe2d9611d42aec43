"""Small building blocks shared by the density estimators."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["ZeroConv", "gated", "wn"]


def wn(module: nn.Module) -> nn.Module:
    """Weight normalisation ``w = g v / |v|`` (per output channel), as the references use."""
    return weight_norm(module, name="weight", dim=0)


def gated(a: Tensor) -> Tensor:
    """WaveNet's gate ``tanh(a_1) sigmoid(a_2)`` over the two channel halves of ``a``."""
    filt, gate = a.chunk(2, dim=1)
    return torch.tanh(filt) * torch.sigmoid(gate)


class ZeroConv(nn.Module):
    """Glow's zero-initialised conv with a learned output scale: ``conv(x) exp(3 scale)``.

    Args:
        n_dims: 1 or 2 (``Conv1d`` or ``Conv2d``); ``kernel_size`` odd, "same" padding.
        init_range: weights start ``U(-r, r)`` (0: exactly zero; NanoFlow's WaveFlow: 1e-3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        n_dims: int = 2,
        init_range: float = 0.0,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if n_dims == 2 else nn.Conv1d
        self.conv = conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.uniform_(self.conv.weight, -init_range, init_range)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros((1, out_channels) + (1,) * n_dims))

    def forward(self, x: Tensor, context: object = None) -> Tensor:
        """``(B, C_in, *) -> (B, C_out, *)``; a context (as for any conditioner) is ignored."""
        return self.conv(x) * torch.exp(3 * self.scale)
