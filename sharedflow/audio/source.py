"""``HarmonicSource``: a sine excitation at the frames' f0, as in neural source-filter vocoders.

A flow that must invent the pitch from the mel alone scatters around it (docs/results.md). A
source gives every sample its phase instead (Wang et al. 2019, "Neural source-filter models").
Frame ``i`` is centred on sample ``i hop``; between the centres of two voiced frames the f0
is interpolated linearly, elsewhere each sample takes its nearest frame's, giving ``f(t)`` and
its running phase ``phi(t) = 2 pi sum_{s <= t} f(s) / sr``. Then

    e_k(t) = v(t) sin(k (phi(t) + theta(t))) [k f(t) < sr / 2],     k = 1 .. K

where ``v`` is 1 where ``f > 0``, harmonics above Nyquist are left out, and ``theta`` is a
per-frame phase offset, upsampled like ``f`` (along the shorter arc of the circle): 0 in
synthesis (the source runs free), and for the likelihood the offset of the audio's own fundamental
from ``phi`` (``phase_offsets``: ``x(t) e^{-i phi(t)}`` low-passed over two of the longest
periods has angle ``theta - pi / 2``). Without it the source's phase drifts against the
audio's, the past predicts each sample better than the source does, and a likelihood-trained
flow learns to ignore it; locked to the audio, the source predicts the harmonics, and in
synthesis the flow follows its pitch.

With ``aligned``, each harmonic has its own offset: ``e_k = v sin(k phi + theta_k)``, with
``theta_k`` measured from the audio like ``theta`` (``x e^{-i k phi}``), 0 in
synthesis. The fundamental's offset locks the harmonics only as far as the vocal tract leaves
their phases where the fundamental's puts them; each its own, the source matches the audio's
harmonics in training, and a flow modelling the audio minus an estimate built on it models a
residual instead of undoing a misaligned estimate (docs/results.md).

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

__all__ = ["HarmonicSource", "phase_offsets", "running_phase", "upsample"]


class HarmonicSource(nn.Module):
    """``f0 (B, F)`` in Hz (0: unvoiced) and phase offsets to the excitation ``(B, C, T)``,
    ``C = K`` sines, then with ``quadrature`` K cosines (``channels``).

    Args:
        n_harmonics: ``K``.
        sample_rate: of the audio.
        hop_length: samples per frame.
        quadrature: also the cosines (see the module docstring).
        aligned: an offset per harmonic, ``P = K`` phase rows, not the fundamental's alone.
    """

    def __init__(
        self,
        n_harmonics: int,
        sample_rate: int,
        hop_length: int,
        quadrature: bool = False,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if n_harmonics < 1:
            raise ValueError(f"a harmonic source needs n_harmonics >= 1, got {n_harmonics}")
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.quadrature = quadrature
        self.aligned = aligned

    @property
    def channels(self) -> int:
        return self.n_harmonics * (2 if self.quadrature else 1)

    @property
    def phase_rows(self) -> int:
        """``P``: the phase offsets per frame the source reads for the likelihood."""
        return self.n_harmonics if self.aligned else 1

    def forward(self, f0: Tensor, n_samples: int, offset: Tensor | None = None) -> Tensor:
        """``f0 (B, F)`` and ``offset``: ``(B, P, F)`` or None (0) -> ``(B, C, n_samples)``;
        ``P = 1``: the fundamental's ``theta``, ``k (phi + theta)``; ``P = K``: each
        harmonic's ``theta_k``, ``k phi + theta_k``."""
        f, phase = running_phase(f0, self.hop_length, self.sample_rate, n_samples)
        f = f[:, None]  # (B, 1, T)
        k = torch.arange(1, self.n_harmonics + 1, device=f0.device, dtype=f.dtype)[:, None]
        phase = k * phase[:, None]  # (B, K, T)
        if offset is not None:
            theta = _upsample_rows(offset.float(), f0 > 0, self.hop_length, n_samples, True)
            phase = phase + (k * theta if offset.shape[1] == 1 else theta)
        audible = (k * f < self.sample_rate / 2) & (f > 0)  # (B, K, T)
        waves = [torch.sin(phase)] + ([torch.cos(phase)] if self.quadrature else [])
        return torch.cat([torch.where(audible, w, torch.zeros_like(w)) for w in waves], 1)

    def envelope(self, amplitude: Tensor, f0: Tensor, n_samples: int) -> Tensor:
        """Each frame's harmonic amplitudes ``A (B, K, F)`` upsampled like ``f``: ``(B, K,
        n_samples)``, to weight the first ``K`` rows of ``forward``'s excitation."""
        return _upsample_rows(amplitude, f0 > 0, self.hop_length, n_samples)


def _upsample_rows(
    rows: Tensor, voiced: Tensor, hop: int, n_samples: int, circular: bool = False
) -> Tensor:
    """``upsample`` of every row of ``rows (B, R, F)`` with the frames' ``voiced (B, F)``."""
    b, n_rows, n_frames = rows.shape
    mask = voiced[:, None].expand(b, n_rows, n_frames).reshape(-1, n_frames)
    up = upsample(rows.reshape(-1, n_frames), mask, hop, n_samples, circular)
    return up.view(b, n_rows, n_samples)


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


def phase_offsets(
    audio: Tensor, f0: Tensor, hop: int, sample_rate: int, window: int, n_harmonics: int = 1
) -> Tensor:
    """``theta_k (B, K, F)``, ``K = n_harmonics``: the phase of ``audio (B, T)``'s ``k``-th
    harmonic against ``k phi`` at each frame's centre (0 where unvoiced), from ``x e^{-i k phi}``
    low-passed by a Hann window of ``window`` samples (see the module docstring). ``K = 1``:
    the fundamental's ``theta``.

    Only the frame centres are needed, so the low-pass is a weighted sum over the window
    around each, and ``e^{-i k phi}`` a running product: ``O(B F W K)``, no ``(B, K, T)``."""
    n = audio.shape[-1]
    _, phase = running_phase(f0, hop, sample_rate, n)
    centres = (torch.arange(f0.shape[-1], device=audio.device) * hop).clamp_max(n - 1)
    pad = (window // 2, (window - 1) // 2)

    def windows(signal: Tensor) -> Tensor:  # (B, T) -> (B, F, W), centred on each frame's
        return F.pad(signal, pad).unfold(-1, window, 1)[:, centres]

    kernel = torch.hann_window(window + 2, periodic=False, device=audio.device)[1:-1]
    mixed = (windows(audio.float()) * (kernel / kernel.sum())).to(torch.complex64)
    phi = windows(phase)
    step = torch.polar(torch.ones_like(phi), -phi)  # e^{-i phi}
    sums = []
    for _ in range(n_harmonics):
        mixed = mixed * step
        sums.append(mixed.sum(-1))
    theta = (torch.stack(sums, 1).angle() + math.pi / 2).remainder(2 * math.pi)
    return torch.where(f0[:, None] > 0, theta, torch.zeros_like(theta))
