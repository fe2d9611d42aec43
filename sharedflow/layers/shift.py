"""``ContextShift``: ``z = x - c``, with ``c`` one channel of the context (``log|det| = 0``).

A flow whose context already holds an estimate of the data, such as a vocoder's harmonics
weighted by the mel's spectral envelope (``sharedflow.audio.envelope``), models what the
estimate leaves: the residual ``x - c`` in the data-to-latent direction, ``z + c`` back. The
context's channel ``channel`` must have the data's shape from dimension 2 on: ``x (B, 1, ...)``
against ``context (B, C, ...)``.
"""

from __future__ import annotations

from torch import Tensor

from sharedflow.core.bijection import Bijection, Context, context_row, zeros_logdet

__all__ = ["ContextShift"]


class ContextShift(Bijection):
    """``x (B, 1, ...) -> x - context[:, channel] (B, 1, ...)``, volume-preserving."""

    def __init__(self, channel: int = -1) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        shift = context_row(context, self.channel, "ContextShift")
        return x - shift.to(x.dtype), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        shift = context_row(context, self.channel, "ContextShift")
        return z + shift.to(z.dtype), zeros_logdet(z)
