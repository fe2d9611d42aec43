"""A small per-position network: a stack of 1x1 convolutions (an MLP over channels).

A generic conditioner for coupling layers in tests, demos and toy models; the published models
use the WaveNets, the Transformer and the Glow CNN. ``(B, C_in, *spatial) -> (B, C_out,
*spatial)``; with ``context_channels`` a context of the same spatial shape is concatenated to the
input. The last layer starts at zero, so the flow starts at the identity.

NanoFlow (``embedding_dim > 0``), Glow-style: the step embedding ``e`` is concatenated to the
input, so the first layer adds ``W_e e`` -- a per-step bias, which is what the deploy form keeps --
and each step owns gates ``g_l`` that scale hidden layer ``l`` by ``exp(g_l)`` (init 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Context
from sharedflow.sharing import StepInput

__all__ = ["LinearHead", "PointwiseMLP"]


class HiddenGates(nn.Module):
    """A step's own log-gates on the hidden layers, ``(n_layers, hidden)``, init 0."""

    def __init__(self, n_layers: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(n_layers, hidden))


class PointwiseMLP(nn.Module):
    """``x -> W_n(... relu(W_1 [x; context; e]))`` per position (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        n_layers: int = 2,
        context_channels: int = 0,
        zero_init: bool = True,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        sizes = [in_channels + context_channels] + [hidden] * n_layers + [out_channels]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)
        )
        self.embedding = nn.Linear(embedding_dim, hidden, bias=False) if embedding_dim else None
        self.embedding_shape = (embedding_dim,)
        if zero_init:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def init_embedding(self, weight: Tensor) -> None:
        nn.init.normal_(weight)

    def make_step_params(self) -> nn.Module:
        return HiddenGates(len(self.layers) - 1, self.layers[0].out_features)

    def step_bias(self, embedding: Tensor, params: nn.Module) -> Tensor:
        """``(emb,) -> (hidden,)``: the embedding's term in the first layer."""
        return self.embedding(embedding)

    def drop_embedding_path(self) -> None:
        self.embedding = None

    def forward(self, x: Tensor, context: Context = None, step: StepInput | None = None) -> Tensor:
        h = x if context is None else torch.cat([x, context], dim=1)
        h = h.movedim(1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == 0 and step is not None:
                h = h + step.bias
            if i < len(self.layers) - 1:
                if step is not None:
                    h = h * torch.exp(step.params.gate[i])
                h = torch.relu(h)
        return h.movedim(-1, 1)


class LinearHead(nn.Module):
    """``W relu(h)`` per position, zero-initialised: ``(B, C, *) -> (B, C_out, *)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(torch.relu(h).movedim(1, -1)).movedim(-1, 1)
