"""``InitialisedFromData``: layers whose parameters are set from the first batch they see.

ActNorm sets its bias and scale so that its output has zero mean and unit variance per channel
on the first training batch. The trainer runs one forward pass on that batch before
DistributedDataParallel broadcasts rank 0's weights, so every rank starts from the same
data-dependent initialisation; a model with no such layer skips the pass.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["InitialisedFromData"]


@runtime_checkable
class InitialisedFromData(Protocol):
    """A layer that initialises itself from a batch ``x`` it receives in training mode."""

    def initialize(self, x: Tensor) -> None: ...
