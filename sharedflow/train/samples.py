"""Periodic samples: a resynthesised held-out clip (wav) or an image grid (png)."""

from __future__ import annotations

import warnings
from pathlib import Path

import soundfile as sf
import torch
from torch import nn

from sharedflow.data.splits import DataSplits

__all__ = ["write_samples", "write_wav"]


def write_wav(path: Path, audio: torch.Tensor, sample_rate: int) -> Path:
    """Write ``(T,)`` audio in ``[-1, 1]`` as 16-bit PCM.

    Samples beyond full scale are clipped (never wrapped) and reported in a warning that says
    how many there were and the peak. Non-finite audio is refused.
    """
    samples = audio.detach().float().cpu()
    if not torch.isfinite(samples).all():
        raise ValueError(f"{path}: refusing to write audio with non-finite samples")
    over = int((samples.abs() > 1).sum())
    if over:
        warnings.warn(
            f"{path}: {over} of {samples.numel()} samples beyond full scale (peak "
            f"{float(samples.abs().max()):.2f}) were clipped to [-1, 1]",
            stacklevel=2,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.clamp(-1, 1).numpy(), sample_rate, subtype="PCM_16")
    return path


@torch.no_grad()
def write_samples(
    model: nn.Module, data: DataSplits, out_dir: Path, step: int, temperature: float
) -> list[Path]:
    """Samples of ``model`` at ``step`` under ``out_dir``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    written = []
    if data.modality == "audio":
        clip = data.val[0][: 2 * model.sample_rate].to(device)
        audio = model.resynthesize(clip[None], temperature)[0]
        written.append(write_wav(out_dir / f"step-{step:08d}.wav", audio, model.sample_rate))
        reference = out_dir / "reference.wav"
        if not reference.exists():
            written.append(write_wav(reference, clip, model.sample_rate))
    else:
        written.append(model.write_sample_grid(out_dir / f"step-{step:08d}.png", temperature))
    model.train(was_training)
    return written
