"""The engine: the bijection contract, composition, base distributions, the flow model."""

from sharedflow.core.base import DiagonalGaussian, RunningVarianceNormal, StandardNormal
from sharedflow.core.bijection import Bijection, Context, Inverse, Sequential
from sharedflow.core.flow import NormalizingFlow
from sharedflow.core.metrics import bits_per_dim, nll_per_dim

__all__ = [
    "Bijection",
    "Context",
    "DiagonalGaussian",
    "Inverse",
    "NormalizingFlow",
    "RunningVarianceNormal",
    "Sequential",
    "StandardNormal",
    "bits_per_dim",
    "nll_per_dim",
]
