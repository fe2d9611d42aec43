"""Fixed permutations along one axis (``log|det| = 0``).

``Permutation(indices, dim)`` gives ``z.select(dim, i) = x.select(dim, indices[i])``. The
factories name the published ones: ``reverse`` (WaveFlow's height flip, Glow's channel
reverse), ``bipartize`` (WaveFlow's permutation b: reverse the upper and the lower halves
separately) and ``random_permutation``. ``Flip(dim)`` reverses an axis of any length (a
one-column WaveFlow's rows, whose number is the signal's). With ``context_dim`` set, a context
aligned with the data (WaveFlow's mel rows) is permuted identically and the next layers see it
permuted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sharedflow.core.bijection import Bijection, Context, zeros_logdet

__all__ = ["Flip", "Permutation", "bipartize", "random_permutation", "reverse"]


class Permutation(Bijection):
    """Permute axis ``dim`` by ``indices`` (and the context's ``context_dim`` axis, if given)."""

    def __init__(
        self, indices: Tensor | list[int], dim: int = 1, context_dim: int | None = None
    ) -> None:
        super().__init__()
        indices = torch.as_tensor(indices, dtype=torch.long, device="cpu")
        if not torch.equal(indices.sort().values, torch.arange(len(indices), device="cpu")):
            raise ValueError(f"not a permutation of 0..{len(indices) - 1}: {indices.tolist()}")
        self.register_buffer("indices", indices)
        self.register_buffer("inverse_indices", torch.argsort(indices))
        self.dim = dim
        self.context_dim = context_dim

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return x.index_select(self.dim, self.indices), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return z.index_select(self.dim, self.inverse_indices), zeros_logdet(z)

    def forward_context(self, context: Context) -> Context:
        if self.context_dim is None or context is None:
            return context
        return context.index_select(self.context_dim, self.indices)

    def inverse_context(self, context: Context) -> Context:
        if self.context_dim is None or context is None:
            return context
        return context.index_select(self.context_dim, self.inverse_indices)


class Flip(Bijection):
    """Reverse axis ``dim`` whatever its length (and the context's ``context_dim`` axis)."""

    def __init__(self, dim: int = 1, context_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.context_dim = context_dim

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return x.flip(self.dim), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return z.flip(self.dim), zeros_logdet(z)

    def forward_context(self, context: Context) -> Context:
        if self.context_dim is None or context is None:
            return context
        return context.flip(self.context_dim)

    inverse_context = forward_context  # a flip is its own inverse


def reverse(size: int, dim: int = 1, context_dim: int | None = None) -> Permutation:
    """``size - 1, ..., 0``: a flip of the axis."""
    return Permutation(list(range(size - 1, -1, -1)), dim, context_dim)


def bipartize(size: int, dim: int = 1, context_dim: int | None = None) -> Permutation:
    """Reverse each half separately: ``0..7 | 8..15 -> 7..0 | 15..8`` for ``size = 16``."""
    if size % 2:
        raise ValueError(f"bipartize needs an even size, got {size}")
    half = size // 2
    first = list(range(half - 1, -1, -1))
    return Permutation(first + [i + half for i in first], dim, context_dim)


def random_permutation(
    size: int, dim: int = 1, seed: int = 0, context_dim: int | None = None
) -> Permutation:
    """A fixed permutation drawn from ``seed``, stored as a buffer (saved with the model)."""
    generator = torch.Generator().manual_seed(seed)
    return Permutation(torch.randperm(size, generator=generator, device="cpu"), dim, context_dim)
