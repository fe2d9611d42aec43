"""Glow's coupling estimators (Kingma & Dhariwal 2018; NanoFlow's image models).

``GlowConvNet``: ``[conv_k (no bias) -> ActNorm -> ReLU] x n`` over ``(B, C_in, H, W)``, giving
``(B, hidden, H, W)``; the head is a ``ZeroConv``. Glow uses kernels ``(3, 1)`` and a 3x3 head;
NanoFlow's image models use six 3x3 layers and a 1x1 head.

NanoFlow (``embedding_channels > 0``): step ``k``'s embedding ``e_k (E, H, W)`` passes through the
step's own ActNorm and is concatenated to the input, and the step's gates ``g (n, hidden)`` scale
layer ``l``'s output by ``exp(g_l)`` (init 0).

Class-conditional (``num_classes > 0``): the label's row of a zero-initialised table
``(N, hidden)`` is added to the first layer's output before its ReLU; labels ``y < 0`` or none
take the mean row (``nets.common.class_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Context
from sharedflow.layers.actnorm import ActNorm
from sharedflow.nets.common import class_rows
from sharedflow.sharing import StepInput

__all__ = ["GlowConvNet"]


class EmbeddingStep(nn.Module):
    """A step's own parameters: ActNorm of its embedding, log-gates per layer (init 0)."""

    def __init__(self, embedding_channels: int, n_layers: int, hidden: int) -> None:
        super().__init__()
        self.norm = ActNorm(embedding_channels)
        self.gate = nn.Parameter(torch.zeros(n_layers, hidden))


class ConvActNorm(nn.Module):
    """``ActNorm(conv_k(x))`` with no conv bias, "same" padding (Glow-PyTorch's Conv2d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        nn.init.normal_(self.conv.weight, std=0.05)
        self.norm = ActNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))[0]


class GlowConvNet(nn.Module):
    """See the module docstring. ``spatial`` is ``(H, W)``, needed only for embeddings;
    ``num_classes`` 0 for an unconditional net."""

    def __init__(
        self,
        in_channels: int,
        hidden: int = 512,
        kernel_sizes: Sequence[int] = (3, 1),
        embedding_channels: int = 0,
        spatial: tuple[int, int] = (1, 1),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.embedding_channels = embedding_channels
        self.spatial = tuple(spatial)
        sizes = [in_channels + embedding_channels] + [hidden] * len(kernel_sizes)
        self.layers = nn.ModuleList(
            ConvActNorm(a, b, k)
            for a, b, k in zip(sizes[:-1], sizes[1:], kernel_sizes, strict=True)
        )
        self.class_table = nn.Parameter(torch.zeros(num_classes, hidden)) if num_classes else None

    # -- NanoFlow step conditioning ---------------------------------------------------------------
    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return (self.embedding_channels, *self.spatial)

    def init_embedding(self, weight: Tensor) -> None:
        nn.init.normal_(weight)

    def make_step_params(self) -> nn.Module:
        return EmbeddingStep(self.embedding_channels, len(self.layers), self.hidden)

    def step_bias(self, embedding: Tensor, params: nn.Module) -> Tensor:
        """``(E, H, W) -> (1, E, H, W)``: the step's normalised embedding."""
        return params.norm(embedding[None])[0]

    def drop_embedding_path(self) -> None:
        """Nothing to drop: the embedding is read directly."""

    # -- the network ------------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Context = None, step: StepInput | None = None) -> Tensor:
        """``(B, C_in, H, W) -> (B, hidden, H, W)``; the context is the labels ``(B,)``."""
        h = x
        if step is not None:
            h = torch.cat([h, step.bias.expand(x.shape[0], -1, -1, -1).to(x.dtype)], dim=1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if step is not None:
                h = h * torch.exp(step.params.gate[i]).view(1, -1, 1, 1)
            if i == 0 and self.class_table is not None:
                h = h + class_rows(self.class_table, context, len(x)).to(h.dtype)[..., None, None]
            h = torch.relu(h)
        return h
