"""``LappedScale``: a diagonal scale in a lapped transform's domain, the gains from the context.

The modulated lapped transform (MLT; Malvar 1990) cuts a waveform ``x (T,)`` into ``N = T / L``
blocks of ``L`` samples and gives block ``b`` the ``L`` coefficients

    X_b[k] = sqrt(2 / L) sum_{n=0}^{2L-1} w[n] x[b L + n] cos(pi / L (n + 1/2 + L / 2) (k + 1/2)),

``w[n] = sin(pi (n + 1/2) / (2 L))``, a sine window over two blocks, the signal read circularly
(``x[T + n] = x[n]``). The ``T`` coefficients are an orthogonal transform of the ``T`` samples
(the windows' overlaps cancel each other's aliasing), and the inverse overlap-adds windowed
cosines. Coefficient ``k`` of block ``b`` is the signal near sample ``b L + L`` at frequency
``(k + 1/2) sr / (2 L)``.

Dividing every coefficient by a gain ``H_b[k] > 0`` and transforming back whitens a signal whose
short-time spectrum is ``H``; multiplying shapes white noise to it, with overlapping windows,
so the shape moves smoothly from block to block. Being orthogonal, the transform contributes
nothing to the log-determinant:

    z = MLT^T diag(1 / H) MLT x,        log|det dz/dx| = -sum_{b, k} log H_b[k].

A vocoder reads ``log H`` from its context, one row at the sample rate: coefficient ``k`` of
block ``b`` at sample ``b L + k`` (``sharedflow.audio.noise.NoiseGains``), folded like the audio.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sharedflow.core.bijection import Bijection, Context, context_row
from sharedflow.layers.reshape import fold, unfold

__all__ = ["LappedScale", "imlt", "mlt", "mlt_basis"]


def mlt_basis(
    block: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> Tensor:
    """The MLT's ``(L, 2L)`` analysis rows (see the module docstring)."""
    n = torch.arange(2 * block, dtype=torch.float64, device=device)
    k = torch.arange(block, dtype=torch.float64, device=device)[:, None]
    window = torch.sin(math.pi * (n + 0.5) / (2 * block))
    phase = math.pi / block * (n + 0.5 + block / 2) * (k + 0.5)
    return (math.sqrt(2 / block) * window * torch.cos(phase)).to(dtype)


def _blocks(n_samples: int, block: int) -> int:
    if n_samples % block or n_samples < 2 * block:
        raise ValueError(
            f"a lapped transform of {block}-sample blocks needs a length that is a multiple "
            f"of {block} and at least {2 * block}, got {n_samples}"
        )
    return n_samples // block


def mlt(x: Tensor, block: int) -> Tensor:
    """``x (..., T) -> (..., T / L, L)``, the circular MLT (see the module docstring)."""
    n = _blocks(x.shape[-1], block)
    basis = mlt_basis(block, x.dtype, x.device)
    starts = torch.arange(n, device=x.device)[:, None] * block
    index = (starts + torch.arange(2 * block, device=x.device)) % x.shape[-1]
    return x[..., index] @ basis.T


def imlt(coefficients: Tensor) -> Tensor:
    """The inverse, ``(..., N, L) -> (..., N L)``: each block's windowed cosines overlap-added."""
    block = coefficients.shape[-1]
    frames = coefficients @ mlt_basis(block, coefficients.dtype, coefficients.device)
    first, second = frames[..., :block].flatten(-2), frames[..., block:].flatten(-2)
    return first + torch.roll(second, block, -1)


class LappedScale(Bijection):
    """A folded waveform ``x (B, 1, n, W)`` (``layers.reshape.fold``), ``z = MLT^T diag(1/H)
    MLT x`` with ``log H`` the context's channel ``channel`` ``(B, C, n, W)``, unfolded to
    ``(B, T)`` and read as ``T / L`` blocks of ``L`` gains. ``log|det| = -sum log H``.
    """

    def __init__(self, block: int, channel: int = -1) -> None:
        super().__init__()
        self.block = block
        self.channel = channel

    def _log_gains(self, x: Tensor, context: Context) -> Tensor:
        row = context_row(context, self.channel, "LappedScale")
        return unfold(row).unflatten(-1, (-1, self.block)).to(x.dtype)  # (B, 1, N, L)

    def _scale(self, x: Tensor, log_gains: Tensor) -> Tensor:
        coefficients = mlt(unfold(x), self.block) * log_gains.exp()
        return fold(imlt(coefficients), x.shape[-2])

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        log_gains = self._log_gains(x, context)
        return self._scale(x, -log_gains), -log_gains.flatten(1).sum(1)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        log_gains = self._log_gains(z, context)
        return self._scale(z, log_gains), log_gains.flatten(1).sum(1)
