"""Invertible 1x1 convolutions (Glow), on ``(B, C, *spatial)``.

``z[:, i] = sum_j W[i, j] x[:, j]`` at every position; ``log|det| = prod(spatial) log|det W|``.

- ``InvertibleConv1x1``: a free ``W``, orthogonal at init (QR of a Gaussian, det +1 as WaveGlow).
  ``log|det W|`` comes from ``slogdet``: ``torch.logdet`` is NaN once ``det W < 0``.
- ``LUInvertibleConv1x1``: ``W = P L (U + diag(sign_s exp(log_s)))`` with fixed ``P`` and signs,
  ``log|det W| = sum(log_s)``. ``lower`` and ``upper`` are stored as full ``C x C`` matrices and
  masked, as Glow-PyTorch stores them (so parameter counts match the reference).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context

__all__ = ["InvertibleConv1x1", "LUInvertibleConv1x1"]


def _random_rotation(n: int, generator: torch.Generator | None = None) -> Tensor:
    # Made on the CPU even under a meta-device context (parameter counting): it needs values.
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, device="cpu"))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _at_least_float32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _channel_matmul(weight: Tensor, x: Tensor) -> Tensor:
    """``(C, C) x (B, C, *spatial) -> (B, C, *spatial)`` along the channels."""
    return torch.einsum("ij,bj...->bi...", weight, x)


class _Conv1x1(Bijection):
    def __init__(self) -> None:
        super().__init__()
        # The deploy form's stored inverse and log-determinant (None: solved each call).
        self.register_buffer("frozen_inverse", None)
        self.register_buffer("frozen_log_abs_det", None)

    def weight_matrix(self) -> Tensor:
        raise NotImplementedError

    def log_abs_det(self) -> Tensor:
        raise NotImplementedError

    def _logdet(self, x: Tensor, log_abs_det: Tensor) -> Tensor:
        return (math.prod(x.shape[2:]) * log_abs_det).expand(x.shape[0])

    def _inverse_weight(self) -> tuple[Tensor, Tensor]:
        """``(W^-1, log|det W|)``: stored in the deploy form, else solved afresh (a cached
        inverse goes stale when the weights change), in float32 at least: linalg has no
        half-precision kernels."""
        if self.frozen_inverse is not None:
            return self.frozen_inverse, self.frozen_log_abs_det
        weight = self.weight_matrix()
        inverse = torch.linalg.inv(_at_least_float32(weight)).to(weight.dtype)
        return inverse, self.log_abs_det()

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return _channel_matmul(self.weight_matrix(), x), self._logdet(x, self.log_abs_det())

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        inverse, log_abs_det = self._inverse_weight()
        return _channel_matmul(inverse, z), -self._logdet(z, log_abs_det)

    @torch.no_grad()
    def to_deploy_form(self) -> None:
        """Store ``W^-1`` and ``log|det W|``, so that the inverse solves nothing (synthesis
        form, exportable: ONNX has no matrix inverse). The weights must not change after."""
        inverse, log_abs_det = self._inverse_weight()
        self.frozen_inverse, self.frozen_log_abs_det = inverse, log_abs_det.detach().clone()


class InvertibleConv1x1(_Conv1x1):
    """A free ``C x C`` weight, orthogonal at init; ``log|det|`` from ``slogdet``."""

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(_random_rotation(n_channels))

    def weight_matrix(self) -> Tensor:
        return self.weight

    def log_abs_det(self) -> Tensor:
        weight = self.weight
        return torch.linalg.slogdet(_at_least_float32(weight)).logabsdet.to(weight.dtype)


class LUInvertibleConv1x1(_Conv1x1):
    """LU-parameterised ``W``, initialised from a random rotation (Glow's ``LU_decomposed``)."""

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        p, lower, upper = torch.linalg.lu(_random_rotation(n_channels))
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        ones = torch.ones(n_channels, n_channels, device="cpu")
        self.register_buffer("lower_mask", torch.tril(ones, -1))
        self.register_buffer("eye", torch.eye(n_channels, device="cpu"))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight_matrix(self) -> Tensor:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def log_abs_det(self) -> Tensor:
        return self.log_s.sum()
