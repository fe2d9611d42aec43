"""Recipes: hydra configs under ``sharedflow/recipes``, composed and instantiated safely.

A recipe is ``train.yaml``'s defaults (groups ``model/``, ``data/``, ``optim/``, ``schedule/``,
``trainer/``) plus what an experiment changes; each node is a ``_target_`` whose keys are the
constructor's arguments. Only ``sharedflow.*`` targets are ever instantiated, so a config read
from a checkpoint cannot name an arbitrary class.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "RECIPES_DIR",
    "RecipeError",
    "build",
    "compose",
    "list_recipes",
    "to_container",
]

RECIPES_DIR = Path(__file__).parent / "recipes"


class RecipeError(ValueError):
    """A recipe that does not exist, does not compose, or names a foreign class."""


def list_recipes() -> list[str]:
    """Names of the runnable recipes (experiments), e.g. ``audio/waveflow-h16-r64``."""
    root = RECIPES_DIR / "experiment"
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def compose(recipe: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``train.yaml`` with the experiment ``recipe`` and hydra-style overrides."""
    if recipe not in list_recipes():
        close = difflib.get_close_matches(recipe, list_recipes(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"unknown recipe {recipe!r}{hint} (see 'sharedflow recipes')")
    try:
        with initialize_config_dir(str(RECIPES_DIR), version_base=None):
            cfg = hydra_compose("train", overrides=[f"experiment={recipe}", *(overrides or [])])
    except (HydraException, OmegaConfBaseException) as error:
        first = str(error).strip().splitlines()[0]
        raise RecipeError(f"recipe {recipe!r}: {first}") from error
    check_targets(cfg)
    return cfg


def check_targets(cfg: Any, where: str = "config") -> None:
    """Refuse any ``_target_`` outside sharedflow."""
    node = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith("sharedflow."):
            raise RecipeError(f"{where}: refusing to instantiate {target!r} (not in sharedflow)")
        for key, value in node.items():
            check_targets(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_targets(value, f"{where}[{i}]")


def build(node: Any, **kwargs: Any) -> Any:
    """Instantiate a config node after checking its targets."""
    check_targets(node)
    try:
        return instantiate(node, **kwargs)
    except (HydraException, OmegaConfBaseException, TypeError) as error:
        cause = error.__cause__ or error  # hydra wraps the builder's own exception
        raise RecipeError(f"cannot build {node.get('_target_', '?')}: {cause}") from error


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
