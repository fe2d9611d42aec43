"""``Pitch``: the fundamental frequency of each mel frame, by YIN (de Cheveigne & Kawahara 2002).

For a frame ``x`` of ``N`` samples centred on sample ``i hop`` (as the mel's frames are), with
``W = N - tau_max`` and lags ``tau`` in ``[0, tau_max]``:

    d(tau)  = sum_{j < W} (x_j - x_{j + tau})^2 = E_0 + E_tau - 2 r(tau)     (r by FFT)
    d'(tau) = d(tau) tau / sum_{1 <= s <= tau} d(s),   d'(0) = 1

The period is the first local minimum of ``d'`` below ``threshold`` in ``[sr / f_max,
sr / f_min]``, refined by a parabola through it and its neighbours (at 8 kHz a whole-sample
period is off by up to 35 cents); a frame with no such minimum, or a silent one, is unvoiced
and gets ``f0 = 0``. Batched torch, so a training step can afford it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Pitch"]


class Pitch(nn.Module):
    """``(B, T)`` audio to ``(B, 1 + T // hop)`` f0 in Hz, 0 where unvoiced (see above).

    Args:
        sample_rate: of the audio.
        hop_length: frame step; the frames match ``MelSpectrogram``'s (centred, reflect pad).
        f_min, f_max: the pitch range searched, Hz.
        threshold: YIN's absolute threshold on ``d'``.
        silence: frames whose RMS is below this (full scale 1) are unvoiced.
    """

    def __init__(
        self,
        sample_rate: int,
        hop_length: int,
        f_min: float = 60.0,
        f_max: float = 500.0,
        threshold: float = 0.15,
        silence: float = 1e-3,
    ) -> None:
        super().__init__()
        if not 0 < f_min < f_max <= sample_rate / 4:
            raise ValueError(
                f"pitch range {f_min}-{f_max} Hz: need 0 < f_min < f_max <= sample_rate / 4"
            )
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.f_min, self.f_max = f_min, f_max
        self.threshold = threshold
        self.silence = silence
        self.tau_min = max(2, math.floor(sample_rate / f_max))
        self.tau_max = math.ceil(sample_rate / f_min)
        self.frame_length = 3 * self.tau_max  # W = 2 tau_max: two of the longest periods

    def forward(self, audio: Tensor) -> Tensor:
        audio = audio.float()
        n, w, tau_max = self.frame_length, self.frame_length - self.tau_max, self.tau_max
        padded = F.pad(audio[:, None], (n // 2, n - n // 2), mode="reflect")[:, 0]  # 1 + T // hop
        frames = padded.unfold(-1, n, self.hop_length)  # (B, F, N)
        spectrum = torch.fft.rfft(frames, 2 * n)
        window = torch.fft.rfft(frames[..., :w], 2 * n)
        r = torch.fft.irfft(spectrum * window.conj(), 2 * n)[..., : tau_max + 1]
        energy = F.pad(frames.square().cumsum(-1), (1, 0))  # energy[k] = sum_{j < k} x_j^2
        e_tau = energy[..., w : w + tau_max + 1] - energy[..., : tau_max + 1]
        d = (energy[..., w : w + 1] + e_tau - 2 * r).clamp_min(0)  # (B, F, tau_max + 1)
        lags = torch.arange(tau_max + 1, device=audio.device)
        cumulative = d[..., 1:].cumsum(-1).clamp_min(1e-12)
        cmnd = torch.cat([torch.ones_like(d[..., :1]), d[..., 1:] * lags[1:] / cumulative], -1)

        in_range = lags >= self.tau_min
        below = (cmnd < self.threshold) & in_range
        first = torch.where(below.any(-1), below.float().argmax(-1), tau_max + 1)
        after = lags >= first[..., None]
        # The dip: from the first lag below the threshold to the first lag back above it.
        end = torch.where(after & ~below, lags, tau_max + 1).amin(-1, keepdim=True)
        dip = after & (lags < end)
        tau = torch.where(dip, cmnd, torch.inf).argmin(-1).clamp(1, tau_max - 1)

        left, mid, right = (cmnd.gather(-1, (tau + k)[..., None])[..., 0] for k in (-1, 0, 1))
        curvature = left - 2 * mid + right
        offset = torch.where(
            curvature > 0, 0.5 * (left - right) / curvature.clamp_min(1e-12), torch.zeros_like(mid)
        ).clamp(-1, 1)
        f0 = self.sample_rate / (tau + offset)
        rms = frames[..., :w].square().mean(-1).sqrt()
        voiced = below.any(-1) & (rms > self.silence)
        return torch.where(voiced, f0, torch.zeros_like(f0))
