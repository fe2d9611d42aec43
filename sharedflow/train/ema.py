"""An exponential moving average of a model's weights: ``w_ema <- d_t w_ema + (1 - d_t) w``.

The decay warms up, ``d_t = min(d, (1 + t) / (10 + t))`` after ``t`` earlier updates, so the
random initial weights do not linger: with a fixed ``d = 0.999``, ``0.999^2400 = 9%`` of them
would still be in the average after 2400 steps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """Holds an averaged copy of ``model`` (same structure, same sharing)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """``d_t`` after ``updates`` earlier updates."""
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Average in ``model``'s weights; ``updates``: how many updates came before (the
        trainer's step), so that a resumed run continues the same schedule."""
        weight = 1 - self.decay_at(updates)
        for averaged, current in zip(self.model.parameters(), model.parameters(), strict=True):
            averaged.lerp_(current.detach(), weight)
        for averaged, current in zip(self.model.buffers(), model.buffers(), strict=True):
            averaged.copy_(current)
