"""Synthesis inputs: a wav to resynthesise, or a mel saved by an acoustic model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sharedflow.data.audio import load_audio
from sharedflow.tensorfile import load_tensors

__all__ = ["read_mel_input"]


def read_mel_input(path: Path, vocoder: nn.Module) -> list[torch.Tensor]:
    """Mels ``(n_mels, F)`` from a wav (its mel) or a ``.npy``/``.pt`` of ``(n_mels, F)`` or
    ``(B, n_mels, F)`` (Tacotron 2's layout)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such input: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".pt"):
        if suffix == ".npy":
            mel = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        else:
            mel = load_tensors(path)
            if not isinstance(mel, torch.Tensor):
                raise ValueError(f"{path}: holds a {type(mel).__name__}, not a mel tensor")
            mel = mel.float()
        mel = mel[None] if mel.dim() == 2 else mel
        n_mels = vocoder.mel.n_mels
        if mel.dim() != 3 or mel.shape[1] != n_mels:
            raise ValueError(
                f"{path}: expected a mel of shape ({n_mels}, F) or (B, {n_mels}, F), "
                f"got {tuple(mel.shape)}"
            )
        return list(mel)
    audio = torch.from_numpy(load_audio(path, vocoder.sample_rate))
    return [vocoder.mel(audio)]
