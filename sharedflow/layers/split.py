"""Split-off: factor out channels early (WaveGlow's early outputs, Glow's multi-scale levels).

``SplitOff(inner, n_off)`` on ``x = [x_off | x_keep]`` along the channels (``position="first"``,
WaveGlow's order; ``"last"`` puts ``x_off`` after, Glow's) gives
``z = [x_off | inner(x_keep)]``: the split-off part goes to the latent unchanged, the rest
through ``inner``. A learned conditional prior on ``x_off`` (Glow's ``Split2d``) is an
``AffineCoupling`` with ``InverseAffine`` placed just before the split, so every prior here is
the standard normal of the base.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from sharedflow.core.bijection import Bijection, Context

__all__ = ["SplitOff"]


class SplitOff(Bijection):
    """``z = [x_off | inner(x_keep)]`` along the channels (see module docstring)."""

    def __init__(
        self, inner: Bijection, n_off: int, position: Literal["first", "last"] = "first"
    ) -> None:
        super().__init__()
        self.inner = inner
        self.n_off = n_off
        self.position = position

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.position == "first":
            return x[:, : self.n_off], x[:, self.n_off :]
        return x[:, -self.n_off :], x[:, : -self.n_off]

    def _join(self, off: Tensor, keep: Tensor) -> Tensor:
        parts = [off, keep] if self.position == "first" else [keep, off]
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        x_off, x_keep = self._split(x)
        z_keep, logdet = self.inner(x_keep, context)
        return self._join(x_off, z_keep), logdet

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        z_off, z_keep = self._split(z)
        x_keep, logdet = self.inner.inverse(z_keep, context)
        return self._join(z_off, x_keep), logdet

    def forward_context(self, context: Context) -> Context:
        return self.inner.forward_context(context)

    def inverse_context(self, context: Context) -> Context:
        return self.inner.inverse_context(context)
