"""Training: the loop, optimisers and schedules, the run; checkpoints re-exported."""

from sharedflow.checkpoint import CheckpointError, load_weights, save_checkpoint
from sharedflow.evaluate import evaluate
from sharedflow.train.loop import Trainer, TrainingError

__all__ = [
    "CheckpointError",
    "Trainer",
    "TrainingError",
    "evaluate",
    "load_weights",
    "save_checkpoint",
]
