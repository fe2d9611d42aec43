"""Activation normalisation (Glow, Kingma & Dhariwal 2018).

Per channel (dim 1) of ``(B, C, *spatial)``: ``z = (x + b) exp(s)``,
``log|det| = prod(spatial) * sum(s)``. The first forward pass in training mode sets ``b`` and ``s``
so that the output has zero mean and unit variance per channel. Whether that happened is a buffer,
so it survives a ``state_dict`` round trip and a loaded model is never re-initialised.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context

__all__ = ["ActNorm"]


class ActNorm(Bijection):
    """ActNorm over ``n_channels`` for inputs ``(B, C)``, ``(B, C, T)`` or ``(B, C, H, W)``."""

    def __init__(self, n_channels: int, n_spatial: int = 2, eps: float = 1e-6) -> None:
        super().__init__()
        shape = (1, n_channels) + (1,) * n_spatial
        self.bias = nn.Parameter(torch.zeros(shape))
        self.logs = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent init from a batch ``x``: zero mean, unit variance per channel."""
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims, keepdim=True)
        std = (x - mean).square().mean(dim=dims, keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        n_positions = math.prod(x.shape[2:])
        return (n_positions * self.logs.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        return (x + self.bias) * torch.exp(self.logs), self._logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return z * torch.exp(-self.logs) - self.bias, -self._logdet(z)
