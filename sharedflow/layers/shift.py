"""``ContextShift``: ``z = x - c``, with ``c`` one channel of the context (``log|det| = 0``).

A flow whose context already holds an estimate of the data, such as a vocoder's harmonics
weighted by the mel's spectral envelope (``sharedflow.audio.envelope``), models what the
estimate leaves: the residual ``x - c`` in the data-to-latent direction, ``z + c`` back. The
context's channel ``channel`` must have the data's shape from dimension 2 on: ``x (B, 1, ...)``
against ``context (B, C, ...)``.
"""

from __future__ import annotations

from torch import Tensor

from sharedflow.core.bijection import Bijection, Context, zeros_logdet

__all__ = ["ContextShift"]


class ContextShift(Bijection):
    """``x (B, 1, ...) -> x - context[:, channel] (B, 1, ...)``, volume-preserving."""

    def __init__(self, channel: int = -1) -> None:
        super().__init__()
        self.channel = channel

    def _shift(self, context: Context) -> Tensor:
        if context is None:
            raise ValueError("ContextShift subtracts a channel of the context, and none was given")
        return context.narrow(1, self.channel % context.shape[1], 1)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return x - self._shift(context).to(x.dtype), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return z + self._shift(context).to(z.dtype), zeros_logdet(z)
