"""Training: the loop, checkpoints, optimisers and schedules, evaluation."""

from sharedflow.train.checkpoint import CheckpointError, load_weights, save_checkpoint
from sharedflow.train.evaluate import evaluate
from sharedflow.train.loop import Trainer, TrainingError

__all__ = [
    "CheckpointError",
    "Trainer",
    "TrainingError",
    "evaluate",
    "load_weights",
    "save_checkpoint",
]
