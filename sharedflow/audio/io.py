"""Audio in and out: synthesis inputs (a wav to resynthesise, or a mel saved by an acoustic
model) and wav output."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from sharedflow.data.audio import load_audio
from sharedflow.tensorfile import load_tensors

__all__ = ["read_mel_input", "write_wav"]


def read_mel_input(
    path: Path, vocoder: nn.Module, resample: bool = False
) -> list[tuple[torch.Tensor, int]]:
    """``(mel (n_mels, F), length)`` pairs from a wav (its mel and its length ``T``) or a
    ``.npy``/``.pt`` of ``(n_mels, F)`` or ``(B, n_mels, F)`` (Tacotron 2's layout; length
    ``hop F``; a pitched mel may leave out its phase rows, which synthesis does not read).
    A ``.npz`` holds the array as ``mel`` and may record the front end's settings
    (``sample_rate``, ``n_fft``, ``hop_length``, ``win_length``, ``n_mels``, ``f_min``,
    ``f_max``); one that differs from the model's is an error naming both. Non-finite values
    are an error naming the file; so is a wav at another sample rate than the model's, unless
    ``resample`` converts it (librosa). The mels are on the vocoder's device."""
    if not path.is_file():
        raise FileNotFoundError(f"no such input: {path}")
    suffix = path.suffix.lower()
    device = next(vocoder.parameters()).device
    if suffix in (".npy", ".npz", ".pt"):
        if suffix == ".npz":
            mel = _read_npz(path, vocoder)
        elif suffix == ".npy":
            mel = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        else:
            mel = load_tensors(path)
            if not isinstance(mel, torch.Tensor):
                raise ValueError(f"{path}: holds a {type(mel).__name__}, not a mel tensor")
            mel = mel.float()
        mel = mel[None] if mel.dim() == 2 else mel
        rows = sorted({vocoder.mel.synthesis_channels, vocoder.mel.channels})
        if mel.dim() != 3 or mel.shape[1] not in rows:
            shapes = " or ".join(f"({n}, F) or (B, {n}, F)" for n in rows)
            raise ValueError(f"{path}: expected a mel of shape {shapes}, got {tuple(mel.shape)}")
        if not torch.isfinite(mel).all():
            raise ValueError(f"{path}: the mel holds NaN or infinite values")
        mel = vocoder.mel.for_synthesis(mel.to(device))
        return [(m, vocoder.hop_length * m.shape[-1]) for m in mel]
    audio = torch.from_numpy(load_audio(path, vocoder.sample_rate, resample))
    if not torch.isfinite(audio).all():
        raise ValueError(f"{path}: the audio holds NaN or infinite samples")
    if len(audio) < vocoder.mel.n_fft:
        raise ValueError(
            f"{path}: {len(audio)} samples is shorter than one STFT window ({vocoder.mel.n_fft})"
        )
    return [(vocoder.mel(audio.to(device)), len(audio))]


def _read_npz(path: Path, vocoder: nn.Module) -> torch.Tensor:
    with np.load(path, allow_pickle=False) as archive:
        if "mel" not in archive:
            raise ValueError(f"{path}: no array named 'mel' (found {sorted(archive.files)})")
        settings = {k: archive[k].item() for k in archive.files if k != "mel"}
        mel = torch.from_numpy(archive["mel"]).float()
    settings = {
        k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in settings.items()
    }
    vocoder.mel.check(settings, str(path))
    return mel


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
