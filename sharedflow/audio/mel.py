"""The Tacotron 2 / WaveGlow mel spectrogram, batched, on any device.

``log(clamp(M |STFT(x)|, 1e-5))``: centred frames (reflect padding of ``n_fft / 2``), periodic
Hann window, magnitude (power 1), ``M`` librosa's Slaney mel basis (area normalised). For ``T``
samples it has ``1 + T // hop`` frames. Defaults are the references' 22.05 kHz settings; every
one is an argument, so 16 kHz and 24 kHz vocoders use the same class.
"""

from __future__ import annotations

import librosa
import torch
from torch import Tensor, nn

__all__ = ["MelSpectrogram"]


class MelSpectrogram(nn.Module):
    """``(B, T)`` or ``(T,)`` audio in ``[-1, 1]`` to ``(B, n_mels, 1 + T // hop)`` log-mel."""

    def __init__(
        self,
        sample_rate: int = 22050,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        clamp: float = 1e-5,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.n_mels = n_mels
        self.f_min, self.f_max = f_min, f_max
        self.clamp = clamp
        basis = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max
        )
        self.register_buffer("basis", torch.from_numpy(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def settings(self) -> dict[str, float | int | None]:
        """What a mel made elsewhere must share with this front end to be read by the model."""
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
        }

    def check(self, given: dict[str, float | int | None], where: str) -> None:
        """Raise ``ValueError`` naming every setting of ``given`` that differs from this one's."""
        ours = self.settings()
        wrong = [
            f"{k}={given[k]} (the model's: {ours[k]})"
            for k in ours
            if k in given and not _same(given[k], ours[k])
        ]
        if wrong:
            raise ValueError(f"{where}: mel settings do not match the model's: {', '.join(wrong)}")

    def magnitude(self, audio: Tensor) -> Tensor:
        """``|STFT|``: ``(B, T) -> (B, n_fft / 2 + 1, frames)``."""
        return torch.stft(
            audio,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window.to(audio.dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()

    def forward(self, audio: Tensor) -> Tensor:
        squeeze = audio.dim() == 1
        audio = audio.unsqueeze(0) if squeeze else audio
        mel = torch.matmul(self.basis.to(audio.dtype), self.magnitude(audio))
        mel = torch.log(torch.clamp(mel, min=self.clamp))
        return mel[0] if squeeze else mel

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length


def _same(a: float | int | None, b: float | int | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
