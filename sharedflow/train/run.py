"""``train(recipe, overrides)``: compose a recipe, build everything, fit, return the run dir."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sharedflow.recipes import RecipeError, build, check_targets, compose, to_container

__all__ = ["fit", "train"]


def train(recipe: str, overrides: list[str] | None = None) -> Path:
    """Train a recipe; a run directory that already holds checkpoints is resumed."""
    return fit(compose(recipe, overrides))


def fit(cfg: DictConfig) -> Path:
    """Train a composed recipe (every ``_target_`` checked first); return its run directory."""
    check_targets(cfg)
    cfg = OmegaConf.create(to_container(cfg))  # resolved: the run's config is plain data
    _check_agreement(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(cfg.trainer.seed)
    model = build(cfg.model)
    _check_fold(model, cfg.data)
    data = build(cfg.data)
    trainer = build(cfg.trainer)
    trainer.fit(model, data, build(cfg.optim), build(cfg.schedule), run_dir, to_container(cfg))
    return run_dir


def _check_agreement(cfg: DictConfig) -> None:
    """The data must be read at the model's sample rate: a mismatch names both values."""
    model, data = cfg.get("model", {}), cfg.get("data", {})
    if "sample_rate" in model and "sample_rate" in data:
        if model.sample_rate != data.sample_rate:
            raise RecipeError(
                f"data.sample_rate={data.sample_rate} does not match "
                f"model.sample_rate={model.sample_rate}: the mel front end would read audio "
                "at the wrong rate"
            )


def _check_fold(model: torch.nn.Module, data: DictConfig) -> None:
    """Audio lengths must fit a vocoder's fold (WaveFlow's ``h``, WaveGlow's group): the
    training segments and the held-out clips' cut, or the first validation fails mid-run."""
    fold = getattr(model, "length_multiple", None)
    for key in ("segment_length", "length_multiple"):
        if fold and data.get(key) and data[key] % fold:
            raise RecipeError(
                f"data.{key}={data[key]} is not a multiple of the model's fold ({fold} "
                f"samples): set data.{key} to a multiple of {fold}"
            )
