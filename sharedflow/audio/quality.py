"""Resynthesis quality: how far vocoded audio is from the input it was made from.

- Multi-resolution STFT distance (Yamamoto et al. 2020): over FFT sizes 512/1024/2048 (hops
  128/256/512), the mean of spectral convergence ``|| |Y| - |X| ||_F / || |Y| ||_F`` and the L1
  distance of log magnitudes.
- Mel-cepstral distortion: ``(10 / ln 10) sqrt(2 sum_{d=1}^{24} (c_d - c'_d)^2)`` dB per frame,
  averaged over frames, with ``c`` the MFCCs (librosa, 25 coefficients, ``c_0`` left out) of the
  two signals, which are time-aligned by construction.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch
from torch import Tensor

__all__ = ["mel_cepstral_distortion", "multi_resolution_stft"]

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def multi_resolution_stft(reference: Tensor, estimate: Tensor) -> float:
    """Mean over resolutions of spectral convergence + log-magnitude L1; 0 for identical audio."""
    total = 0.0
    for n_fft, hop in RESOLUTIONS:
        window = torch.hann_window(n_fft, dtype=reference.dtype)
        spec = [
            torch.stft(a, n_fft, hop, window=window, return_complex=True).abs().clamp(1e-7)
            for a in (reference, estimate)
        ]
        convergence = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0])
        log_distance = (spec[0].log() - spec[1].log()).abs().mean()
        total += float(convergence + log_distance)
    return total / len(RESOLUTIONS)


def mel_cepstral_distortion(reference: Tensor, estimate: Tensor, sample_rate: int) -> float:
    """MCD in dB between two aligned signals of the same length."""
    cepstra = [
        librosa.feature.mfcc(y=a.double().numpy(), sr=sample_rate, n_mfcc=25)[1:]
        for a in (reference, estimate)
    ]
    frames = min(c.shape[1] for c in cepstra)
    diff = cepstra[0][:, :frames] - cepstra[1][:, :frames]
    return float(np.mean(10 / math.log(10) * np.sqrt(2 * (diff**2).sum(0))))
