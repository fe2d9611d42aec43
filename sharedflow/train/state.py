"""``TrainState``: everything a checkpoint holds and a resumed run needs, saved and loaded as
one object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharedflow.checkpoint import load_state, load_weights, save_checkpoint
from sharedflow.train.ema import EMA

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """The model, its EMA, the optimiser, schedule and gradient scaler, the step, and the
    training seconds spent (``clock``). ``save`` writes a checkpoint that also holds the RNG
    state; ``load`` restores all of it, so the run continues exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler
    ema: EMA | None = None
    step: int = 0
    clock: float = 0.0

    @property
    def averaged(self) -> nn.Module:
        """The weights to validate and sample with: the EMA's when kept, else the model's."""
        return self.ema.model if self.ema is not None else self.model

    def save(self, run_dir: Path, config: dict[str, Any], keep_last: int) -> Path:
        """Write ``ckpt-<step>/`` atomically (``checkpoint.save_checkpoint``)."""
        state = {
            "step": self.step,
            "train_seconds": self.clock,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        ema = self.ema.model if self.ema is not None else None
        return save_checkpoint(run_dir, self.step, self.model, state, config, ema, keep_last)

    def load(self, path: Path, device: torch.device) -> None:
        """Restore everything from checkpoint ``path``; a mismatch or an unreadable file raises
        ``CheckpointError`` or ``TensorFileError`` before the step is changed."""
        load_weights(self.model, path)
        if self.ema is not None:
            load_weights(self.ema.model, path, ema=True)
        state = load_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.clock = int(state["step"]), float(state["train_seconds"])
