"""``train(recipe, overrides)``: compose a recipe, build everything, fit, return the run dir."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from sharedflow.recipes import build, compose, to_container

__all__ = ["train"]


def train(recipe: str, overrides: list[str] | None = None) -> Path:
    """Train a recipe; a run directory that already holds checkpoints is resumed."""
    cfg = compose(recipe, overrides)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(cfg.trainer.seed)
    model = build(cfg.model)
    data = build(cfg.data)
    trainer = build(cfg.trainer)
    trainer.fit(model, data, build(cfg.optim), build(cfg.schedule), run_dir, to_container(cfg))
    return run_dir
