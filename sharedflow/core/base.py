"""Base distributions of a normalizing flow.

Both are diagonal Gaussians over the latent ``z`` of any shape ``(B, ...)``; ``log_prob`` sums over
every non-batch dimension and ``sample`` scales the noise by a temperature ``t`` (``z ~ N(mu, (t
sigma)^2)``), as WaveGlow's sigma and Glow's temperature do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import sum_except_batch

__all__ = ["DiagonalGaussian", "RunningVarianceNormal", "StandardNormal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class StandardNormal(nn.Module):
    """``N(0, I)``: ``log p(z) = -sum(z^2 / 2 + log(2 pi) / 2)``.

    Args:
        event_shape: the shape of one latent, so that ``sample(n)`` knows it; leave ``None`` for
            models whose latent length follows the input (audio), and pass full shapes instead.
    """

    def __init__(self, event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.event_shape = None if event_shape is None else tuple(event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device and dtype

    def log_prob(self, z: Tensor) -> Tensor:
        """``(B, ...) -> (B,)``."""
        return sum_except_batch(-0.5 * z.square() - _HALF_LOG_2PI)

    def sample(self, shape: int | Sequence[int], temperature: float = 1.0) -> Tensor:
        """Draw ``z``; ``shape`` is a batch size (needs ``event_shape``) or a full shape."""
        full = _full_shape(shape, self.event_shape)
        anchor = self._anchor
        return temperature * torch.randn(full, device=anchor.device, dtype=anchor.dtype)


class RunningVarianceNormal(StandardNormal):
    """``N(0, I)`` for the likelihood; samples from ``N(0, diag(v))`` (TarFlow's shift-only prior).

    A volume-preserving flow cannot rescale its latent, so TarFlow tracks ``v``, the per-dimension
    second moment of the latents seen in training, ``v <- v + m (mean_batch(z^2) - v)`` with
    ``m = 0.1``, updated by every ``log_prob`` in training mode, and scales the sampling noise by
    ``sqrt(v)``. The loss always uses unit variance.
    """

    def __init__(self, event_shape: Sequence[int], momentum: float = 0.1) -> None:
        super().__init__(event_shape)
        self.momentum = momentum
        self.register_buffer("var", torch.ones(self.event_shape))

    def log_prob(self, z: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.var.lerp_(z.detach().square().mean(0).to(self.var.dtype), self.momentum)
        return super().log_prob(z)

    def sample(self, shape: int | Sequence[int], temperature: float = 1.0) -> Tensor:
        z = super().sample(shape, temperature)
        return z * self.var.sqrt().to(z.dtype)


class DiagonalGaussian(nn.Module):
    """A learned ``N(mu, diag(exp(2 log_sigma)))`` over a fixed ``event_shape``, zero-initialised.

    ``log p(z) = -sum((z - mu)^2 / (2 sigma^2) + log sigma + log(2 pi) / 2)``.
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def log_prob(self, z: Tensor) -> Tensor:
        """``(B, *event_shape) -> (B,)``."""
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return sum_except_batch(-0.5 * u.square() - self.log_scale - _HALF_LOG_2PI)

    def sample(self, shape: int | Sequence[int], temperature: float = 1.0) -> Tensor:
        full = _full_shape(shape, self.event_shape)
        noise = torch.randn(full, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + temperature * torch.exp(self.log_scale) * noise


def _full_shape(
    shape: int | Sequence[int], event_shape: tuple[int, ...] | None
) -> tuple[int, ...]:
    if isinstance(shape, int):
        if event_shape is None:
            raise ValueError(
                "this base has no event_shape: pass the full latent shape, not a count"
            )
        return (shape, *event_shape)
    return tuple(shape)
