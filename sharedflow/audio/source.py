"""``HarmonicSource``: a sine excitation at the frames' f0, as in neural source-filter vocoders.

A flow that must invent the pitch from the mel alone scatters around it (docs/results.md). A
source gives every sample its phase instead (Wang et al. 2019, "Neural source-filter models").
Frame ``i`` is centred on sample ``i hop``; between the centres of two voiced frames the f0
is interpolated linearly, elsewhere each sample takes its nearest frame's, giving ``f(t)`` and
its running phase ``phi(t) = 2 pi sum_{s <= t} f(s) / sr``. Then

    e_k(t) = v(t) sin(k (phi(t) + theta(t))) [k f(t) < sr / 2],     k = 1 .. K

where ``v`` is 1 where ``f > 0``, harmonics above Nyquist are left out, and ``theta`` is a
per-frame phase offset, upsampled like ``f`` (along the shorter arc of the circle): 0 in
synthesis (the source runs free), and in training the offset of the audio's own fundamental
from ``phi`` (``phase_offset``: ``x(t) e^{-i phi(t)}`` low-passed over two of the longest
periods has angle ``theta - pi / 2``). Without it the source's phase drifts against the
audio's, the past predicts each sample better than the source does, and a likelihood-trained
flow learns to ignore it; locked to the audio, the source predicts the harmonics, and in
synthesis the flow follows its pitch.

With ``quadrature`` the source also gives ``v cos(k (phi + theta))``, 2K rows. The nets read
the source through 1x1 convs, one sample at a time, so from sines alone they cannot shift a
harmonic's phase, as a formant does to the harmonics near it; sine and cosine together span
every phase, ``a sin + b cos``.

Given each frame's harmonic amplitudes ``A_k`` (``sharedflow.audio.envelope``), upsampled like
``f`` (``envelope``), the rows ``A_k(t) e_k(t)`` carry the mel's spectral envelope, and their
sum is already a rough copy of the voiced audio.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HarmonicSource", "phase_offset", "running_phase", "upsample"]


class HarmonicSource(nn.Module):
    """``f0 (B, F)`` in Hz (0: unvoiced) and a phase offset to the excitation ``(B, C, T)``,
    ``C = K`` sines, then with ``quadrature`` K cosines (``channels``).

    Args:
        n_harmonics: ``K``.
        sample_rate: of the audio.
        hop_length: samples per frame.
        quadrature: also the cosines (see the module docstring).
    """

    def __init__(
        self, n_harmonics: int, sample_rate: int, hop_length: int, quadrature: bool = False
    ) -> None:
        super().__init__()
        if n_harmonics < 1:
            raise ValueError(f"a harmonic source needs n_harmonics >= 1, got {n_harmonics}")
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.quadrature = quadrature

    @property
    def channels(self) -> int:
        return self.n_harmonics * (2 if self.quadrature else 1)

    def forward(self, f0: Tensor, n_samples: int, offset: Tensor | None = None) -> Tensor:
        """``f0 (B, F)`` and ``offset``: ``theta (B, F)`` or None (0) -> ``(B, C, n_samples)``."""
        f, phase = running_phase(f0, self.hop_length, self.sample_rate, n_samples)
        if offset is not None:
            phase = phase + upsample(offset, f0 > 0, self.hop_length, n_samples, circular=True)
        f, phase = f[:, None], phase[:, None]  # (B, 1, T)
        k = torch.arange(1, self.n_harmonics + 1, device=f0.device, dtype=f.dtype)[:, None]
        audible = (k * f < self.sample_rate / 2) & (f > 0)  # (B, K, T)
        waves = [torch.sin(k * phase)] + ([torch.cos(k * phase)] if self.quadrature else [])
        return torch.cat([torch.where(audible, w, torch.zeros_like(w)) for w in waves], 1)

    def envelope(self, amplitude: Tensor, f0: Tensor, n_samples: int) -> Tensor:
        """Each frame's harmonic amplitudes ``A (B, K, F)`` upsampled like ``f``: ``(B, K,
        n_samples)``, to weight the first ``K`` rows of ``forward``'s excitation."""
        b, n_harmonics, n_frames = amplitude.shape
        voiced = (f0 > 0)[:, None].expand(b, n_harmonics, n_frames).reshape(-1, n_frames)
        a = upsample(amplitude.reshape(-1, n_frames), voiced, self.hop_length, n_samples)
        return a.view(b, n_harmonics, n_samples)


def upsample(
    frames: Tensor, voiced: Tensor, hop: int, n_samples: int, circular: bool = False
) -> Tensor:
    """``frames (B, F)`` centred on samples ``i hop`` to ``(B, n_samples)``: linear between two
    ``voiced (B, F)`` frames, each sample's nearest frame's value elsewhere (past the last
    centre, the last frame's). ``circular``: angles, interpolated along the shorter arc."""
    n_frames = frames.shape[-1]
    if n_frames * hop < n_samples:
        raise ValueError(
            f"{n_frames} f0 frames cover fewer than the {n_samples} samples asked for"
        )
    position = torch.arange(n_samples, device=frames.device, dtype=torch.float64) / hop
    left = position.floor().long().clamp_max(n_frames - 1)
    right = (left + 1).clamp_max(n_frames - 1)
    w = (position - left).clamp_max(1).to(torch.float32)
    values = frames.float()
    a, b = values[:, left], values[:, right]
    step = (b - a + math.pi).remainder(2 * math.pi) - math.pi if circular else b - a
    nearest = torch.where(w < 0.5, a, b)
    return torch.where(voiced[:, left] & voiced[:, right], a + w * step, nearest)


def running_phase(f0: Tensor, hop: int, sample_rate: int, n_samples: int) -> tuple[Tensor, Tensor]:
    """The upsampled f0 ``f (B, T)`` and its running phase ``phi (B, T)`` in ``[0, 2 pi)``."""
    f = upsample(f0, f0 > 0, hop, n_samples)
    cycles = torch.cumsum(f.double() / sample_rate, -1)  # float64: hours stay exact
    return f, (2 * math.pi * (cycles - cycles.floor())).to(f.dtype)


def phase_offset(audio: Tensor, f0: Tensor, hop: int, sample_rate: int, window: int) -> Tensor:
    """``theta (B, F)``: the phase of ``audio (B, T)``'s fundamental against ``phi``, at each
    frame's centre (0 where unvoiced), from ``x e^{-i phi}`` low-passed by a Hann
    window of ``window`` samples (see the module docstring)."""
    n = audio.shape[-1]
    _, phase = running_phase(f0, hop, sample_rate, n)
    x = audio.float()
    mixed = torch.stack([x * torch.cos(phase), -x * torch.sin(phase)], 1)  # (B, 2, T): Re, Im
    kernel = torch.hann_window(window + 2, periodic=False, device=x.device)[1:-1]
    kernel = (kernel / kernel.sum()).expand(2, 1, window)
    smooth = F.conv1d(F.pad(mixed, (window // 2, (window - 1) // 2)), kernel, groups=2)
    centres = (torch.arange(f0.shape[-1], device=x.device) * hop).clamp_max(n - 1)
    re, im = smooth[:, 0, centres], smooth[:, 1, centres]
    theta = (torch.atan2(im, re) + math.pi / 2).remainder(2 * math.pi)
    return torch.where(f0 > 0, theta, torch.zeros_like(theta))
