"""A real-valued STFT pair as strided convolutions (exportable: no complex tensors).

``STFT(n_fft, hop, win)`` matches ``torch.stft(..., center=True, pad_mode="reflect",
window=hann(win), return_complex=True)`` split into real and imaginary parts, and ``inverse``
matches ``torch.istft`` with the same settings:

- analysis: ``X_t[k] = sum_n x[t hop + n - N/2] w[n] exp(-2 pi i k n / N)``, one conv1d with the
  ``N/2 + 1`` cosine and sine kernels, ``(B, T) -> (B, N/2 + 1, frames)`` twice;
- synthesis: each frame's inverse real DFT ``x_t[n] = (1/N) sum_k c_k (Re X_t[k] cos -
  Im X_t[k] sin)(2 pi k n / N)`` (``c_k`` 1 at ``k = 0, N/2``, else 2), windowed and overlap-added
  by one transposed conv1d, divided by the overlap-added squared window, the padding cut off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["STFT"]


class STFT(nn.Module):
    """Real-valued STFT and its inverse (see the module docstring); hann window."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        window = torch.zeros(n_fft, dtype=torch.float64)
        start = (n_fft - win_length) // 2
        window[start : start + win_length] = torch.hann_window(win_length, dtype=torch.float64)
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * n / n_fft
        analysis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        weight = torch.full_like(k, 2.0)
        weight[0] = weight[-1] = 1.0
        synthesis = torch.cat([weight * torch.cos(angle), -weight * torch.sin(angle)])
        self.register_buffer("analysis", analysis[:, None].float(), persistent=False)
        self.register_buffer(
            "synthesis", (synthesis * window / n_fft)[:, None].float(), persistent=False
        )
        self.register_buffer("window_sq", (window**2)[None, None].float(), persistent=False)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T) -> (real, imag)``, each ``(B, n_fft / 2 + 1, 1 + T // hop)``."""
        pad = self.n_fft // 2
        x = F.pad(audio[:, None], (pad, pad), mode="reflect")
        spectrum = F.conv1d(x, self.analysis.to(x.dtype), stride=self.hop_length)
        return spectrum.chunk(2, dim=1)

    def inverse(self, real: Tensor, imag: Tensor, length: int) -> Tensor:
        """``(real, imag) -> (B, length)`` audio."""
        frames = torch.cat([real, imag], dim=1)
        audio = F.conv_transpose1d(frames, self.synthesis.to(frames.dtype), stride=self.hop_length)
        ones = torch.ones(1, 1, frames.shape[-1], dtype=frames.dtype, device=frames.device)
        envelope = F.conv_transpose1d(
            ones, self.window_sq.to(frames.dtype), stride=self.hop_length
        )
        pad = self.n_fft // 2
        audio = audio[:, 0, pad : pad + length]
        return audio / envelope[:, 0, pad : pad + length].clamp(min=1e-11)
