"""Recipes: hydra configs, composed and instantiated safely.

The shipped recipes live in the repository's ``recipes/`` folder (in a wheel, the data-only
package ``sharedflow.configs``). A user's own folders of recipes, in the same layout, are added
after them with ``--recipes DIR`` or ``$SHAREDFLOW_RECIPES`` (``os.pathsep``-separated): a
user's experiment can override every value of a shipped config, or pick configs of its own. A
user file at the same path as a shipped one is refused, since hydra would silently ignore it.

A recipe is ``train.yaml``'s defaults (groups ``model/``, ``data/``, ``optim/``, ``schedule/``,
``trainer/``) plus what an experiment changes; each node is a ``_target_`` whose keys are the
constructor's arguments. Only the objects on an allowlist (``BUILDERS``) are ever built, and
configs are never interpolated while building, so a config read from a checkpoint can name
nothing else.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sharedflow.errors import first_line

__all__ = [
    "BUILDERS",
    "RECIPES_DIR",
    "RecipeError",
    "bind_targets",
    "build",
    "compose",
    "list_recipes",
    "check_recipe",
    "search_path",
    "searchpath_override",
    "user_recipe_dirs",
    "to_container",
]


def _shipped_dir() -> Path:
    """The shipped recipes: inside an installed wheel, or at the top of a source checkout."""
    installed = Path(__file__).parent / "configs"
    return installed if installed.is_dir() else Path(__file__).parents[1] / "recipes"


RECIPES_DIR = _shipped_dir()
USER_RECIPES = "SHAREDFLOW_RECIPES"


class RecipeError(ValueError):
    """A recipe that does not exist, does not compose, or names a foreign class."""


def user_recipe_dirs() -> list[Path]:
    """The user's recipe folders from ``$SHAREDFLOW_RECIPES``, checked to exist."""
    dirs = [Path(d).expanduser() for d in os.environ.get(USER_RECIPES, "").split(os.pathsep) if d]
    for folder in dirs:
        if not folder.is_dir():
            raise RecipeError(
                f"recipe folder {folder} (from --recipes or ${USER_RECIPES}) is not a directory"
            )
        shadowed = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*.yaml")
            if (RECIPES_DIR / p.relative_to(folder)).is_file()
        )
        if shadowed:  # hydra would silently prefer the shipped file of the same name
            raise RecipeError(
                f"{folder}: {', '.join(shadowed)} would shadow shipped recipes of the same "
                "name; give your configs names of their own (an experiment can still override "
                "every value of a shipped config)"
            )
    return dirs


def search_path() -> list[Path]:
    """Every recipe folder, the shipped one first (hydra's search order)."""
    return [RECIPES_DIR, *user_recipe_dirs()]


def searchpath_override() -> list[str]:
    """The hydra override that adds the user's recipe folders, or none."""
    extra = user_recipe_dirs()
    if not extra:
        return []
    return [f"hydra.searchpath=[{','.join(f'file://{d.resolve()}' for d in extra)}]"]


def list_recipes() -> list[str]:
    """Names of the runnable recipes (experiments), e.g. ``audio/waveflow-h16-r64``."""
    names = set()
    for folder in search_path():
        root = folder / "experiment"
        names.update(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))
    return sorted(names)


def check_recipe(recipe: str) -> None:
    """Raise ``RecipeError`` naming the closest recipes unless ``recipe`` exists."""
    if recipe not in list_recipes():
        close = difflib.get_close_matches(recipe, list_recipes(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"unknown recipe {recipe!r}{hint} (see 'sharedflow recipes')")


def compose(recipe: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``train.yaml`` with the experiment ``recipe`` and hydra-style overrides."""
    check_recipe(recipe)
    try:
        with initialize_config_dir(str(RECIPES_DIR), version_base=None):
            cfg = hydra_compose(
                "train",
                overrides=[f"experiment={recipe}", *searchpath_override(), *(overrides or [])],
            )
    except (HydraException, OmegaConfBaseException) as error:
        raise RecipeError(f"recipe {recipe!r}: {first_line(error)}") from error
    check_targets(cfg)
    return cfg


class Builders:
    """The allowlist: every object that a recipe or a checkpoint's config may build, by name.

    A ``_target_`` is looked up here by its exact name and replaced by the registered object
    before hydra sees the config, so hydra never imports or follows a path itself: a name that
    walks through a module's imports (``sharedflow.recipes.os.system``) is simply not here.
    """

    def __init__(self) -> None:
        self._objects: dict[str, Callable[..., Any]] = {}
        self._builtin = False

    def register(self, name: str, obj: Callable[..., Any]) -> None:
        """Allow ``obj`` under ``name`` (for a user's own model, data set or schedule)."""
        if not callable(obj):
            raise TypeError(f"{name}: only callables can be builders")
        self._objects[name] = obj

    def __getitem__(self, name: str) -> Callable[..., Any]:
        self._register_builtin()
        return self._objects[name]

    def __contains__(self, name: object) -> bool:
        self._register_builtin()
        return name in self._objects

    def _register_builtin(self) -> None:
        if self._builtin:
            return
        self._builtin = True
        from sharedflow import data, models, sharing, train
        from sharedflow.train import optim

        for module, names in (
            (
                models,
                ("waveglow", "waveflow", "waveflow_parakeet", "tarflow", "glow", "nanoflow_glow"),
            ),
            (data, ("speech", "images", "GlottalPulses", "Harmonics")),
            (sharing, ("Independent", "Shared", "Decomposed", "NanoFlow")),
            (train, ("Trainer",)),
            (optim, optim.__all__),
        ):
            for name in names:
                self.register(f"{module.__name__}.{name}", getattr(module, name))


BUILDERS = Builders()
SPECIAL = frozenset({"_target_", "_args_", "_partial_"})


def bind_targets(node: Any, where: str = "config") -> Any:
    """A plain copy of ``node`` with each ``_target_`` replaced by its allowlisted object.

    Every ``_target_`` is checked, however deeply nested (inside lists, ``_args_`` and partials).
    A string that still holds an interpolation (``${...}``) is refused too: a config is data,
    and hydra would otherwise resolve it (``${oc.env:...}``) while building.
    """
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        bound = {}
        for key, value in node.items():
            if key == "_target_":
                if not isinstance(value, str) or value not in BUILDERS:
                    raise RecipeError(
                        f"{where}: refusing to build {value!r}: not one of sharedflow's "
                        "builders (recipes and checkpoints may name only those)"
                    )
                bound[key] = BUILDERS[value]
            else:
                bound[key] = bind_targets(value, f"{where}.{key}")
        return bound
    if isinstance(node, list | tuple):
        return [bind_targets(value, f"{where}[{i}]") for i, value in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        raise RecipeError(f"{where}: refusing the interpolation {node!r} (a config is data)")
    return node


def check_targets(cfg: Any, where: str = "config") -> None:
    """Raise ``RecipeError`` unless every ``_target_`` in ``cfg`` is an allowlisted builder."""
    bind_targets(cfg, where)


def build(node: Any, where: str = "config") -> Any:
    """Instantiate a config node whose targets are all allowlisted builders.

    ``_args_`` are positional arguments, ``_partial_: true`` returns a ``functools.partial``,
    and nested nodes with a ``_target_`` are built first (hydra's conventions).
    """
    bound = bind_targets(node, where)
    try:
        return _instantiate(bound)
    except (TypeError, ValueError, RuntimeError) as error:  # a value the builder refuses
        if isinstance(error, RecipeError):
            raise
        target = bound.get("_target_") if isinstance(bound, dict) else None
        raise RecipeError(
            f"{where}: cannot build {getattr(target, '__name__', '?')}({_given(bound)}): "
            f"{first_line(error)}"
        ) from error


def _given(node: Any) -> str:
    """The plain values a node passes to its builder, as ``key=value`` pairs."""
    if not isinstance(node, dict):
        return ""
    plain = {
        k: v for k, v in node.items() if not k.startswith("_") and not isinstance(v, dict | list)
    }
    return ", ".join(f"{k}={v!r}" for k, v in plain.items())


def _instantiate(node: Any) -> Any:
    if isinstance(node, list):
        return [_instantiate(value) for value in node]
    if not isinstance(node, dict):
        return node
    if "_target_" not in node:
        return {key: _instantiate(value) for key, value in node.items()}
    unknown = sorted(k for k in node if k.startswith("_") and k.endswith("_") and k not in SPECIAL)
    if unknown:
        raise RecipeError(f"unsupported special keys {unknown} (allowed: {sorted(SPECIAL)})")
    args = [_instantiate(value) for value in node.get("_args_", [])]
    kwargs = {key: _instantiate(value) for key, value in node.items() if key not in SPECIAL}
    if node.get("_partial_", False):
        return functools.partial(node["_target_"], *args, **kwargs)
    return node["_target_"](*args, **kwargs)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
