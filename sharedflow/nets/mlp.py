"""A small per-position network: a stack of 1x1 convolutions (an MLP over channels).

A generic conditioner for coupling layers in tests, demos and toy models; the published models
use the WaveNets, the Transformer and the Glow CNN instead. ``(B, C_in, *spatial) ->
(B, C_out, *spatial)``; with ``context_channels`` a context of the same spatial shape is
concatenated to the input. The last layer starts at zero, so the flow starts at the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Context

__all__ = ["PointwiseMLP"]


class PointwiseMLP(nn.Module):
    """``x -> W_n(... relu(W_1 [x; context]))`` per position."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        n_layers: int = 2,
        context_channels: int = 0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        sizes = [in_channels + context_channels] + [hidden] * n_layers + [out_channels]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)
        )
        if zero_init:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor, context: Context = None) -> Tensor:
        h = x if context is None else torch.cat([x, context], dim=1)
        h = h.movedim(1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.movedim(-1, 1)
