"""WaveGlow's denoiser: subtract the model's own bias spectrum (Prenger et al. 2019, repo).

The bias is ``|STFT|`` of what the vocoder makes from an all-zero mel at temperature 0, one
frame. Denoising subtracts ``strength * bias`` from each frame's magnitude, clamps at 0 and
inverts with the original phase. Works for any vocoder, on CPU or CUDA (the reference is
CUDA-only); a strength around 0.1 is usual.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedflow.audio.stft import STFT

__all__ = ["Denoiser"]


class Denoiser(nn.Module):
    """``audio (B, T) -> audio (B, T)`` with the vocoder's bias spectrum removed.

    Each frame's ``(Re, Im)`` is scaled by ``max(|X| - strength * bias, 0) / |X|``, which keeps
    its phase; the STFT pair is real-valued (``sharedflow.audio.stft``), so the denoiser can be
    part of an exported synthesis graph.
    """

    def __init__(self, vocoder: nn.Module, n_frames: int = 88) -> None:
        super().__init__()
        mel = vocoder.mel
        self.stft = STFT(mel.n_fft, mel.hop_length, mel.win_length)
        device = next(vocoder.parameters()).device
        self.stft.to(device)
        zeros = torch.zeros(1, mel.channels, n_frames, device=device)
        bias_audio = vocoder.synthesize(zeros, temperature=0.0).float()
        real, imag = self.stft(bias_audio)
        self.register_buffer("bias", (real.square() + imag.square()).sqrt()[:, :, :1])  # (1, F, 1)

    @torch.no_grad()
    def forward(self, audio: Tensor, strength: float = 0.1) -> Tensor:
        real, imag = self.stft(audio.float())
        magnitude = (real.square() + imag.square()).sqrt()
        kept = torch.clamp(magnitude - strength * self.bias, min=0.0)
        scale = kept / magnitude.clamp(min=1e-12)
        cleaned = self.stft.inverse(real * scale, imag * scale, audio.shape[-1])
        return cleaned.to(audio.dtype)
