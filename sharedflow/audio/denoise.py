"""WaveGlow's denoiser: subtract the model's own bias spectrum (Prenger et al. 2019, repo).

The bias is ``|STFT|`` of what the vocoder makes from an all-zero mel at temperature 0, one
frame. Denoising subtracts ``strength * bias`` from each frame's magnitude, clamps at 0 and
inverts with the original phase. Works for any vocoder, on CPU or CUDA (the reference is
CUDA-only); a strength around 0.1 is usual.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Denoiser"]


class Denoiser(nn.Module):
    """``audio (B, T) -> audio (B, T)`` with the vocoder's bias spectrum removed."""

    def __init__(self, vocoder: nn.Module, n_frames: int = 88) -> None:
        super().__init__()
        mel = vocoder.mel
        self.n_fft, self.hop_length, self.win_length = mel.n_fft, mel.hop_length, mel.win_length
        device = next(vocoder.parameters()).device
        self.register_buffer("window", torch.hann_window(self.win_length, device=device))
        zeros = torch.zeros(1, mel.n_mels, n_frames, device=device)
        bias_audio = vocoder.synthesize(zeros, temperature=0.0).float()
        self.register_buffer("bias", self._stft(bias_audio).abs()[:, :, :1])  # (1, F, 1)

    def _stft(self, audio: Tensor) -> Tensor:
        return torch.stft(
            audio, self.n_fft, self.hop_length, self.win_length, self.window, return_complex=True
        )

    @torch.no_grad()
    def forward(self, audio: Tensor, strength: float = 0.1) -> Tensor:
        spectrum = self._stft(audio.float())
        magnitude = torch.clamp(spectrum.abs() - strength * self.bias, min=0.0)
        cleaned = torch.polar(magnitude, spectrum.angle())
        return torch.istft(
            cleaned,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            length=audio.shape[-1],
        )
