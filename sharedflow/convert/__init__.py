"""Importing the reference implementations' checkpoints (``sharedflow convert``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sharedflow.convert.mapping import KINDS, convert_state
from sharedflow.convert.reference import ConversionError, read_state_dict
from sharedflow.recipes import compose, to_container
from sharedflow.train.checkpoint import save_checkpoint

__all__ = ["KINDS", "ConversionError", "convert", "convert_state", "read_state_dict"]


def convert(
    kind: str, source: str | Path, out: str | Path, overrides: dict[str, Any] | None = None
) -> Path:
    """Convert a reference checkpoint into a sharedflow checkpoint under ``out``."""
    if kind not in KINDS:
        raise ConversionError(f"unknown kind {kind!r}: {', '.join(KINDS)}")
    model, model_config = convert_state(kind, read_state_dict(source), overrides)
    config = to_container(compose(KINDS[kind][0]))
    config["model"] = OmegaConf.to_container(OmegaConf.create(model_config))
    config["name"] = f"converted-{Path(source).stem}"
    state = {"step": 0, "converted_from": str(source)}
    return save_checkpoint(out, 0, model, state, config, keep_last=0)
