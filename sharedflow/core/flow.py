"""``NormalizingFlow``: a bijection, a base distribution and a context encoder.

``log p(x | c) = log p_base(f(x; e(c))) + log|det df/dx|`` with ``e`` the context encoder, run once
per call (a mel upsampler, a class embedding). Sampling inverts ``f`` on base noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context
from sharedflow.core.metrics import bits_per_dim, nll_per_dim

__all__ = ["Base", "ContextEncoder", "NormalizingFlow"]


class Base(Protocol):
    def log_prob(self, z: Tensor) -> Tensor: ...

    def sample(self, shape: int | Sequence[int], temperature: float = 1.0) -> Tensor: ...


class ContextEncoder(Protocol):
    """Maps a raw context to what the transform reads; ``shape`` is the data shape it serves."""

    def __call__(self, context: Context, shape: torch.Size) -> Context: ...


class NormalizingFlow(nn.Module):
    """A normalizing flow ``x = f^-1(z)``, ``z ~ base``.

    Args:
        transform: the bijection ``f`` from data to latent.
        base: the latent distribution (``StandardNormal``, ``DiagonalGaussian``).
        context_encoder: optional module ``(context, data_shape) -> encoded context``.
    """

    def __init__(
        self, transform: Bijection, base: nn.Module, context_encoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.transform = transform
        self.base = base
        self.context_encoder = context_encoder

    def encode(self, context: Context, shape: torch.Size) -> Context:
        if self.context_encoder is None:
            return context
        return self.context_encoder(context, shape)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        """``(z, logdet)`` of the data-to-latent map, the context encoded once."""
        return self.transform(x, self.encode(context, x.shape))

    def log_prob(self, x: Tensor, context: Context = None) -> Tensor:
        """``log p(x | context)`` summed over non-batch dims: ``(B, ...) -> (B,)``."""
        z, logdet = self(x, context)
        return self.base.log_prob(z) + logdet

    def nll_per_dim(self, x: Tensor, context: Context = None) -> Tensor:
        """Negative log-likelihood in nats per dimension, ``(B,)``."""
        return nll_per_dim(self.log_prob(x, context), x[0].numel())

    def bits_per_dim(
        self, x: Tensor, context: Context = None, n_bits: int = 8, data_range: float = 2.0
    ) -> Tensor:
        """Bits per dimension of ``x`` quantised to ``2^n_bits`` levels over ``data_range``."""
        return bits_per_dim(self.log_prob(x, context), x[0].numel(), n_bits, data_range)

    def sample(
        self,
        shape: int | Sequence[int],
        context: Context = None,
        temperature: float = 1.0,
        data_shape: Sequence[int] | None = None,
    ) -> Tensor:
        """Draw data by inverting the transform on base noise.

        Args:
            shape: a sample count (the base knows the event shape) or the full latent shape.
            context: the raw context (mel, labels), encoded here.
            temperature: scale of the base noise.
            data_shape: the data shape the context encoder should serve, when it differs from the
                latent shape (a fold between them); defaults to the latent shape.
        """
        z = self.base.sample(shape, temperature)
        target = torch.Size(data_shape) if data_shape is not None else z.shape
        x, _ = self.transform.inverse(z, self.encode(context, target))
        return x
