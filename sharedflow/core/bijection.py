"""The bijection contract that every layer of sharedflow follows.

A bijection ``f`` maps data ``x`` to a latent ``z``. Both directions return the log-absolute
Jacobian determinant of the map they apply, summed over every non-batch dimension:

    forward(x, context) -> (z, log|det df/dx|)       logdet shape (B,)
    inverse(z, context) -> (x, log|det df^-1/dz|)    and the two cancel: ld_fwd(x) = -ld_inv(f(x))

A ``context`` (a mel spectrogram, a class embedding) is passed unchanged to every layer, unless a
layer also moves it: a permutation of the rows of a WaveFlow grid permutes the mel rows with them.
Such layers override ``forward_context`` / ``inverse_context``; composition threads the context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

Context = Any  # a tensor, a tuple of tensors, or None; only the layers that use it look inside

__all__ = [
    "Bijection",
    "Context",
    "Inverse",
    "Sequential",
    "context_row",
    "sum_except_batch",
    "zeros_logdet",
]


class Bijection(nn.Module, ABC):
    """An invertible map with a tractable log-determinant (see the module docstring)."""

    @abstractmethod
    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        """Data to latent: returns ``(z, logdet)`` with ``logdet`` of shape ``(B,)``."""

    @abstractmethod
    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        """Latent to data: returns ``(x, logdet)``, the log-determinant of the inverse map."""

    def forward_context(self, context: Context) -> Context:
        """The context as the next layer (in the data-to-latent order) sees it."""
        return context

    def inverse_context(self, context: Context) -> Context:
        """Undo :meth:`forward_context`."""
        return context


class Inverse(Bijection):
    """``Inverse(f)`` swaps the two directions of ``f``."""

    def __init__(self, bijection: Bijection) -> None:
        super().__init__()
        self.bijection = bijection

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return self.bijection.inverse(x, self.bijection.forward_context(context))

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return self.bijection.forward(z, self.bijection.inverse_context(context))

    def forward_context(self, context: Context) -> Context:
        return self.bijection.inverse_context(context)

    def inverse_context(self, context: Context) -> Context:
        return self.bijection.forward_context(context)


class Sequential(Bijection):
    """Composition ``f = f_n o ... o f_1``: forward runs ``f_1`` first, inverse ``f_n`` first.

    The log-determinant is the sum of the layers' log-determinants (chain rule).
    """

    def __init__(self, *layers: Bijection | Iterable[Bijection]) -> None:
        super().__init__()
        if len(layers) == 1 and not isinstance(layers[0], nn.Module):
            layers = tuple(layers[0])
        self.layers = nn.ModuleList(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Bijection:
        return self.layers[index]

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x, context)
            logdet = logdet + ld
            context = layer.forward_context(context)
        return x, logdet

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        contexts = [context]
        for layer in self.layers[:-1]:
            contexts.append(layer.forward_context(contexts[-1]))
        logdet = z.new_zeros(z.shape[0])
        for layer, ctx in zip(reversed(self.layers), reversed(contexts), strict=True):
            z, ld = layer.inverse(z, ctx)
            logdet = logdet + ld
        return z, logdet

    def forward_context(self, context: Context) -> Context:
        for layer in self.layers:
            context = layer.forward_context(context)
        return context

    def inverse_context(self, context: Context) -> Context:
        for layer in reversed(self.layers):
            context = layer.inverse_context(context)
        return context


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum of ``x`` over every dimension but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def zeros_logdet(x: Tensor) -> Tensor:
    """A zero log-determinant ``(B,)`` on the device and dtype of ``x``."""
    return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)


def context_row(context: Context, channel: int, reader: str) -> Tensor:
    """Channel ``channel`` of a tensor context ``(B, C, ...)`` as ``(B, 1, ...)``, for a layer
    that reads one row of it; ``reader`` names that layer in the error when there is none."""
    if context is None:
        raise ValueError(f"{reader} reads a channel of the context, and none was given")
    return context.narrow(1, channel % context.shape[1], 1)
