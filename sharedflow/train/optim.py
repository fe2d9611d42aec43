"""Optimisers and learning-rate schedules that recipes may name.

Recipes and checkpoints name only ``sharedflow.*`` targets, so the optimisers are re-exported
here. Schedules are multiplicative factors of the base learning rate, per step.
"""

from __future__ import annotations

import math

from torch.optim import SGD, Adam, Adamax, AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["SGD", "Adam", "AdamW", "Adamax", "constant", "cosine_with_warmup", "step_decay"]


def constant(optimizer: Optimizer, warmup_steps: int = 0) -> LambdaLR:
    """``lr`` after an optional linear warm-up."""
    return LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0)


def step_decay(optimizer: Optimizer, step_size: int, gamma: float = 0.5) -> LambdaLR:
    """``lr gamma^(s // step_size)`` (WaveFlow's StepLR)."""
    return LambdaLR(optimizer, lambda s: gamma ** (s // step_size))


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up to ``lr``, then a cosine down to ``min_ratio lr`` at ``total_steps``."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        progress = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
