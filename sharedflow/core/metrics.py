"""The figures a model is judged by (``Metric``, ``METRICS``), and the likelihood units: nats
per dimension and bits per dimension.

For data quantised to ``2^b`` levels over a range of width ``R`` (``R = 2`` for ``[-1, 1)``), a
continuous density ``p`` on the dequantised data gives the discrete log-likelihood
``log P(x) = log p(x) + D log(R / 2^b)`` (one bin of width ``R / 2^b`` per dimension), so

    bits/dim = -(log p(x) + D log(R / 2^b)) / (D ln 2).

With ``R = 2``, ``b = 8`` this is TarFlow's ``log p - D ln 128``; with ``R = 1`` it is Glow's
``nll / (D ln 2) + 8``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

__all__ = ["METRICS", "Metric", "bits_per_dim", "nll_per_dim"]


@dataclass(frozen=True)
class Metric:
    """How a figure is named and read."""

    name: str
    unit: str
    higher_is_better: bool


METRICS = {
    m.name: m
    for m in (
        Metric("ll", "nats per sample (test-set LL)", True),
        Metric("bpd", "bits per dim", False),
        Metric("pesq", "wide-band PESQ (1 to 4.64)", True),
        Metric("stoi", "STOI (0 to 1)", True),
        Metric("mcd_db", "dB mel-cepstral distortion", False),
        Metric("mrstft", "multi-resolution STFT distance", False),
        Metric("log_mel_l1", "log-mel L1 distance", False),
        Metric("periodicity", "periodicity (voicing) RMS error", False),
        Metric("f0_cents", "pitch RMS error in cents (frames voiced in both)", False),
        Metric("fid", "FID", False),
        Metric("shape_acc", "shape accuracy of samples (0 to 1)", True),
    )
}


def nll_per_dim(log_prob: Tensor, n_dims: int) -> Tensor:
    """Negative log-likelihood in nats per dimension: ``-log p(x) / D``, ``(B,) -> (B,)``."""
    return -log_prob / n_dims


def bits_per_dim(
    log_prob: Tensor, n_dims: int, n_bits: int = 8, data_range: float = 2.0
) -> Tensor:
    """Bits per dim of data quantised to ``2^n_bits`` levels over ``data_range``; ``(B,)``."""
    log_bin = math.log(data_range) - n_bits * math.log(2.0)
    return -(log_prob + n_dims * log_bin) / (n_dims * math.log(2.0))
