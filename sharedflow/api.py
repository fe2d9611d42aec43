"""The Python API behind the command line, for notebooks: build, load, evaluate, synthesize.

model = sharedflow.api.build_model("audio/waveflow-tiny")
model, config = sharedflow.api.load_model("runs/waveflow-tiny")   # latest checkpoint
print(sharedflow.api.evaluate_checkpoint("runs/waveflow-tiny"))
audio = sharedflow.api.synthesize(model, mel, temperature=0.8)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sharedflow.checkpoint import (
    CheckpointError,
    average_weights,
    checkpoints,
    load_weights,
    read_config,
    resolve_checkpoint,
    run_directory,
)
from sharedflow.data.held_out import HeldOut, held_out
from sharedflow.evaluate import evaluate
from sharedflow.precision import TORCH_DTYPES
from sharedflow.recipes import build, compose
from sharedflow.sharing import ParameterCount, count_parameters, deploy

__all__ = [
    "build_model",
    "evaluate_checkpoint",
    "held_out_set",
    "load_model",
    "parameter_report",
    "synthesize",
]


def build_model(
    recipe: str, overrides: list[str] | None = None, device: str | None = None
) -> nn.Module:
    """The (untrained) model of a recipe; ``device="meta"`` builds it without memory (to count
    the parameters of paper-scale models)."""
    cfg = compose(recipe, overrides)
    if device is None:
        return build(cfg.model)
    with torch.device(device):
        return build(cfg.model)


def parameter_report(model: nn.Module) -> dict[str, Any]:
    """Parameter counts in training and deploy form (see ``sharedflow.sharing``)."""
    training: ParameterCount = count_parameters(model)
    deployed: ParameterCount = count_parameters(deploy(model))
    return {"training": training.as_dict(), "deploy": deployed.as_dict()}


def load_model(
    checkpoint: str | Path,
    ema: bool = False,
    average: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model and its config from a checkpoint or a run directory (its latest).

    Args:
        ema: load the EMA weights, when the run kept them.
        average: average the weights of the run's last ``average`` checkpoints (NanoFlow's
            ``-a N``); 0 loads one checkpoint.
    """
    path = resolve_checkpoint(checkpoint)
    config = read_config(path)  # checked: allowlisted builders only, no interpolation
    model = build(config["model"], where=f"{path}: model")
    if average > 1:
        run = run_directory(path)
        found = checkpoints(run)
        if average > len(found):
            raise ValueError(
                f"--average {average}: {run} holds {len(found)} checkpoint(s) to average"
            )
        average_weights(model, found[-average:])
    else:
        load_weights(model, path, ema=ema)
    bad = [
        k
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights in {bad[:3]} ({len(bad)} tensors)")
    return model.to(device).eval(), config


def held_out_set(config: dict[str, Any], data_overrides: dict[str, Any] | None = None) -> HeldOut:
    """What to score: ``source`` in ``data_overrides`` (any folder, file list, LJSpeech tree,
    image folder or array; see ``sharedflow.data.held_out``), else the run's own held-out set.
    Other overrides change how the data is read (``resample``, ``format``, ...)."""
    overrides = dict(data_overrides or {})
    source = overrides.pop("source", None)
    data = {**config["data"], **overrides}
    if source is not None:
        return held_out(data, str(source))
    items = build(data, where="data").val
    return HeldOut(items, f"{len(items)} held-out items of the run's data")


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_overrides: dict[str, Any] | None = None,
    ema: bool = False,
    average: int = 0,
    max_items: int | None = None,
    device: str = "cpu",
    resynthesis: bool = False,
    temperature: float | None = None,
    precision: str | Callable[[nn.Module, int], str] = "fp32",
) -> tuple[dict[str, float], str]:
    """Held-out metrics of a checkpoint and a description of what was scored (see
    ``held_out_set``); with ``resynthesis``, also the model's sample-quality figures
    (``core.task.Task.quality``: a vocoder's resynthesis scores). A non-finite metric is an
    error.

    ``precision`` (``fp32``, ``bf16``, ``fp16``) is the synthesis precision: the flow runs in it,
    the mel front end in float32; or a function ``(model, samples of the first clip) ->
    precision`` that picks it once the model is loaded (``--dtype auto`` times the model's own
    GEMM, ``Vocoder.generation_gemm``). The likelihood is always summed in float32: a bf16 sum of
    ``10^4`` log-determinant terms loses the digits a comparison needs."""
    model, config = load_model(checkpoint, ema, average, device)
    data = held_out_set(config, data_overrides)
    n_items = len(data.items) if max_items is None else min(max_items, len(data.items))
    result = evaluate(model, data.items, device, max_items)
    if resynthesis:
        synthesis = deploy(model)
        if callable(precision):
            precision = precision(synthesis, len(data.items[0]))
        synthesis.flow.to(TORCH_DTYPES[precision])
        result.update(synthesis.quality(data.items, temperature, max_items))
    bad = [name for name, value in result.items() if not np.isfinite(value) and name != "f0_cents"]
    if bad:
        raise ValueError(f"{checkpoint}: non-finite {', '.join(bad)} on {data.description}")
    return result, f"scored {n_items} of {data.description}"


@torch.no_grad()
def synthesize(
    model: nn.Module,
    mel: torch.Tensor,
    temperature: float | None = None,
    denoiser: nn.Module | None = None,
    strength: float = 0.1,
    length: int | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Audio ``(B, length)`` from a mel ``(B, n_mels, F)`` or ``(n_mels, F)``; ``length``
    defaults to ``hop F`` (pass a wav's length to resynthesise it). The temperature defaults
    to the model's own (WaveGlow 0.6, WaveFlow 1.0). A ``Denoiser(model)``, built once per
    model, removes its bias spectrum with ``strength``. ``noise``: the ``N(0, 1)`` latent to
    use instead of a fresh draw (see ``Vocoder.synthesize``)."""
    mel = mel[None] if mel.dim() == 2 else mel
    if not torch.isfinite(mel).all():
        raise ValueError("the mel holds non-finite values")
    device = next(model.parameters()).device
    audio = model.synthesize(
        mel.to(device), temperature, length, None if noise is None else noise.to(device)
    )
    if not torch.isfinite(audio).all():
        raise ValueError("synthesis gave non-finite audio (are the model's weights finite?)")
    return audio if denoiser is None else denoiser(audio, strength)
