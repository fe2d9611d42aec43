"""Importing the reference implementations' checkpoints (``sharedflow convert``).

Each family (``KINDS``) says where its settings come from and maps its weights declaratively
(``sharedflow.convert.rules``); ``convert_state`` resolves the settings, builds our model and
fills it, checking that every tensor on both sides is accounted for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import Tensor, nn

from sharedflow.checkpoint import save_checkpoint
from sharedflow.convert.family import Family, read_config_file, resolve
from sharedflow.convert.glow import GLOW, NANOFLOW_GLOW
from sharedflow.convert.reference import ConversionError, read_state_dict
from sharedflow.convert.rules import apply_rules
from sharedflow.convert.tarflow import TARFLOW
from sharedflow.convert.waveflow import NANOFLOW, WAVEFLOW, WAVEFLOW_PARAKEET
from sharedflow.convert.waveglow import WAVEGLOW
from sharedflow.recipes import build, compose, to_container

__all__ = [
    "KINDS",
    "ConversionError",
    "Family",
    "convert",
    "convert_state",
    "read_state_dict",
]

KINDS: dict[str, Family] = {
    family.kind: family
    for family in (WAVEGLOW, WAVEFLOW, NANOFLOW, WAVEFLOW_PARAKEET, TARFLOW, GLOW, NANOFLOW_GLOW)
}


def _family(kind: str) -> Family:
    if kind not in KINDS:
        raise ConversionError(f"unknown kind {kind!r}: {', '.join(KINDS)}")
    return KINDS[kind]


def convert_state(
    kind: str,
    ref: dict[str, Tensor],
    overrides: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    stem: str = "",
) -> tuple[nn.Module, dict[str, Any]]:
    """Our model filled from a reference state dict, and the model config used.

    Args:
        kind: a key of ``KINDS``.
        ref: the reference state dict.
        overrides: settings given on the command line.
        config: the reference's configuration file, parsed.
        stem: the checkpoint's file name without its suffix.
    """
    family = _family(kind)
    try:
        settings = resolve(family, ref, config, dict(overrides or {}), stem)
    except KeyError as error:
        raise ConversionError(f"not a {kind} checkpoint: it lacks {error}") from error
    model = build(settings)
    apply_rules(model, family.prepare(ref), family.rules(settings), family.built, family.ignored)
    return model.eval(), settings


def convert(
    kind: str,
    source: str | Path,
    out: str | Path,
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
) -> Path:
    """Convert a reference checkpoint into a sharedflow checkpoint under ``out``."""
    family = _family(kind)
    config = read_config_file(config_file) if config_file is not None else None
    model, model_config = convert_state(
        kind, read_state_dict(source), overrides, config, Path(source).stem
    )
    run_config = to_container(compose(family.recipe))
    run_config["model"] = OmegaConf.to_container(OmegaConf.create(model_config))
    run_config["name"] = f"converted-{Path(source).stem}"
    state = {"step": 0, "converted_from": str(source)}
    return save_checkpoint(out, 0, model, state, run_config, keep_last=0)
