"""The Python API behind the command line, for notebooks: build, load, evaluate, synthesize.

model = sharedflow.api.build_model("audio/waveflow-tiny")
model, config = sharedflow.api.load_model("runs/waveflow-tiny")   # latest checkpoint
print(sharedflow.api.evaluate_checkpoint("runs/waveflow-tiny"))
audio = sharedflow.api.synthesize(model, mel, temperature=0.8)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sharedflow.recipes import build, compose
from sharedflow.sharing import ParameterCount, count_parameters, deploy
from sharedflow.train.checkpoint import (
    average_weights,
    checkpoints,
    load_weights,
    read_config,
    resolve_checkpoint,
)
from sharedflow.train.evaluate import evaluate

__all__ = [
    "build_model",
    "evaluate_checkpoint",
    "load_model",
    "parameter_report",
    "resynthesis_quality",
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
        run = path.parent if path.is_dir() else path.parent.parent
        average_weights(model, checkpoints(run)[-average:])
    else:
        load_weights(model, path, ema=ema)
    return model.to(device).eval(), config


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_overrides: dict[str, Any] | None = None,
    ema: bool = False,
    average: int = 0,
    max_items: int | None = None,
    device: str = "cpu",
    resynthesis: bool = False,
) -> dict[str, float]:
    """Held-out metrics of a checkpoint on its run's data, or on ``data_overrides`` of it;
    for vocoders with ``resynthesis``, also the MR-STFT distance and MCD of resynthesis."""
    model, config = load_model(checkpoint, ema, average, device)
    data_cfg = OmegaConf.merge(OmegaConf.create(config["data"]), data_overrides or {})
    data = build(data_cfg)
    result = evaluate(model, data.val, device, max_items)
    if resynthesis and model.modality == "audio":
        result.update(resynthesis_quality(deploy(model), data.val, max_items=max_items))
    return result


@torch.no_grad()
def resynthesis_quality(
    model: nn.Module, clips: Any, temperature: float | None = None, max_items: int | None = None
) -> dict[str, float]:
    """Mean multi-resolution STFT distance and mel-cepstral distortion of resynthesised clips."""
    from sharedflow.audio.quality import mel_cepstral_distortion, multi_resolution_stft

    scores: dict[str, list[float]] = {"mrstft": [], "mcd_db": []}
    for i in range(len(clips) if max_items is None else min(max_items, len(clips))):
        clip = clips[i].float()
        audio = synthesize(model, model.mel(clip), temperature)[0, : len(clip)].cpu()
        scores["mrstft"].append(multi_resolution_stft(clip, audio))
        scores["mcd_db"].append(mel_cepstral_distortion(clip, audio, model.sample_rate))
    return {name: sum(values) / len(values) for name, values in scores.items()}


@torch.no_grad()
def synthesize(
    model: nn.Module,
    mel: torch.Tensor,
    temperature: float | None = None,
    denoiser: nn.Module | None = None,
    strength: float = 0.1,
) -> torch.Tensor:
    """Audio ``(B, hop F)`` from a mel ``(B, n_mels, F)`` or ``(n_mels, F)``; the temperature
    defaults to the model's own (WaveGlow 0.6, WaveFlow 1.0). A ``Denoiser(model)``, built once
    per model, removes its bias spectrum with ``strength``."""
    mel = mel[None] if mel.dim() == 2 else mel
    device = next(model.parameters()).device
    audio = model.synthesize(mel.to(device), temperature)
    return audio if denoiser is None else denoiser(audio, strength)
