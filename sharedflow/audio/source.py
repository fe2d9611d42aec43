"""``HarmonicSource``: a sine excitation at the frames' f0, as in neural source-filter vocoders.

A flow that must invent the pitch from the mel alone scatters around it (docs/results.md). A
source gives every sample its phase instead (Wang et al. 2019, "Neural source-filter models"):
with the frame f0 held over each hop, ``f(t)``, and its running phase
``phi(t) = 2 pi sum_{s <= t} f(s) / sr``,

    e_k(t) = v(t) sin(k (phi(t) + theta(t))) [k f(t) < sr / 2],     k = 1 .. K

where ``v`` is 1 in voiced frames (``f0 > 0``) and 0 elsewhere, harmonics above Nyquist are
left out, and ``theta`` is a per-frame phase offset, held like ``f``: 0 in synthesis (the source
runs free), and in training the offset of the audio's own fundamental from ``phi``
(``phase_offset``: ``x(t) e^{-i phi(t)}`` low-passed over two of the longest periods has angle
``theta - pi / 2``). Without it the source's phase drifts against the audio's, the past
predicts each sample better than the source does, and a likelihood-trained flow learns to
ignore it; locked to the audio, the source predicts the harmonics, and in synthesis the flow
follows its pitch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HarmonicSource", "phase_offset", "running_phase"]


class HarmonicSource(nn.Module):
    """``f0 (B, F)`` in Hz (0: unvoiced) and a phase offset to the excitation ``(B, K, T)``.

    Args:
        n_harmonics: ``K``.
        sample_rate: of the audio.
        hop_length: samples per frame.
    """

    def __init__(self, n_harmonics: int, sample_rate: int, hop_length: int) -> None:
        super().__init__()
        if n_harmonics < 1:
            raise ValueError(f"a harmonic source needs n_harmonics >= 1, got {n_harmonics}")
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.hop_length = hop_length

    def forward(self, f0: Tensor, n_samples: int, offset: Tensor | None = None) -> Tensor:
        """``f0 (B, F)``, ``offset``: ``theta (B, F)`` or None (0) -> ``(B, K, n_samples)``."""
        f, phase = running_phase(f0, self.hop_length, self.sample_rate, n_samples)
        if offset is not None:
            phase = phase + _held(offset, self.hop_length, n_samples)
        f, phase = f[:, None], phase[:, None]  # (B, 1, T)
        k = torch.arange(1, self.n_harmonics + 1, device=f0.device, dtype=f.dtype)[:, None]
        audible = (k * f < self.sample_rate / 2) & (f > 0)  # (B, K, T)
        return torch.where(audible, torch.sin(k * phase), torch.zeros_like(phase))


def _held(frames: Tensor, hop: int, n_samples: int) -> Tensor:
    """``(B, F) -> (B, n_samples)``, each frame's value held over its hop."""
    if frames.shape[-1] * hop < n_samples:
        raise ValueError(
            f"{frames.shape[-1]} f0 frames cover fewer than the {n_samples} samples asked for"
        )
    return frames.float().repeat_interleave(hop, -1)[:, :n_samples]


def running_phase(f0: Tensor, hop: int, sample_rate: int, n_samples: int) -> tuple[Tensor, Tensor]:
    """The held f0 ``f (B, T)`` and its running phase ``phi (B, T)`` in ``[0, 2 pi)``."""
    f = _held(f0, hop, n_samples)
    cycles = torch.cumsum(f.double() / sample_rate, -1)  # float64: hours stay exact
    return f, (2 * math.pi * (cycles - cycles.floor())).to(f.dtype)


def phase_offset(audio: Tensor, f0: Tensor, hop: int, sample_rate: int, window: int) -> Tensor:
    """``theta (B, F)``: the phase of ``audio (B, T)``'s fundamental against ``phi``, at the
    middle of each frame's hop (0 where unvoiced), from ``x e^{-i phi}`` low-passed by a Hann
    window of ``window`` samples (see the module docstring)."""
    n = audio.shape[-1]
    _, phase = running_phase(f0, hop, sample_rate, n)
    x = audio.float()
    mixed = torch.stack([x * torch.cos(phase), -x * torch.sin(phase)], 1)  # (B, 2, T): Re, Im
    kernel = torch.hann_window(window + 2, periodic=False, device=x.device)[1:-1]
    kernel = (kernel / kernel.sum()).expand(2, 1, window)
    smooth = F.conv1d(F.pad(mixed, (window // 2, (window - 1) // 2)), kernel, groups=2)
    middles = (torch.arange(f0.shape[-1], device=x.device) * hop + hop // 2).clamp_max(n - 1)
    re, im = smooth[:, 0, middles], smooth[:, 1, middles]
    theta = (torch.atan2(im, re) + math.pi / 2).remainder(2 * math.pi)
    return torch.where(f0 > 0, theta, torch.zeros_like(theta))
