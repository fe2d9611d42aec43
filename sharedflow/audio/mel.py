"""The Tacotron 2 / WaveGlow mel spectrogram, batched, on any device.

``log(clamp(M |STFT(x)|, 1e-5))``: centred frames (reflect padding of ``n_fft / 2``), periodic
Hann window, magnitude (power 1), ``M`` librosa's Slaney mel basis (area normalised). For ``T``
samples it has ``1 + T // hop`` frames. Defaults are the references' 22.05 kHz settings; every
one is an argument, so 16 kHz and 24 kHz vocoders use the same class.
"""

from __future__ import annotations

from typing import Any

import librosa
import torch
from torch import Tensor, nn

from sharedflow.audio.pitch import Pitch
from sharedflow.audio.source import phase_offsets

__all__ = ["MelSpectrogram", "PitchedMel"]


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

    @property
    def channels(self) -> int:
        """Rows of what ``forward`` returns: ``n_mels``."""
        return self.n_mels

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

    @property
    def synthesis_channels(self) -> int:
        """Rows synthesis reads: all of them (see ``PitchedMel``)."""
        return self.channels

    def for_synthesis(self, mel: Tensor) -> Tensor:
        """The mel as synthesis reads it: unchanged (see ``PitchedMel``)."""
        return mel


def _same(a: float | int | None, b: float | int | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


class PitchedMel(MelSpectrogram):
    """The log-mel with ``1 + P`` more rows per frame: ``(B, T) -> (B, n_mels + 1 + P, F)``.

    Row ``n_mels`` is ``sharedflow.audio.pitch.Pitch``'s f0 in Hz (0: unvoiced), the next ``P``
    the phases of the audio's first ``P`` harmonics against the source's running phase
    (``sharedflow.audio.source.phase_offsets``; ``P = 1``, the fundamental's), for a vocoder
    whose nets also read a harmonic source. Only the likelihood reads the phase rows; synthesis
    runs the source free (``for_synthesis``), so a mel made elsewhere may hold zeros there.
    ``f0_min``, ``f0_max``: the pitch range searched; ``n_phases``: ``P``.
    """

    def __init__(
        self,
        *args: Any,
        f0_min: float = 60.0,
        f0_max: float = 500.0,
        n_phases: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pitch = Pitch(self.sample_rate, self.hop_length, f0_min, f0_max)
        self.n_phases = n_phases

    @property
    def channels(self) -> int:
        return self.n_mels + 1 + self.n_phases

    def settings(self) -> dict[str, float | int | None]:
        return super().settings() | {"f0_min": self.pitch.f_min, "f0_max": self.pitch.f_max}

    @property
    def synthesis_channels(self) -> int:
        """Rows synthesis reads: the log-mel and the f0, ``n_mels + 1``."""
        return self.n_mels + 1

    def for_synthesis(self, mel: Tensor) -> Tensor:
        """``mel (B, n_mels + 1 (+ P), F)`` to ``(B, n_mels + 1 + P, F)`` with zero phase rows:
        the likelihood reads the audio's phases, synthesis runs the source free."""
        rows = mel[:, : self.synthesis_channels]
        return torch.cat([rows, rows.new_zeros(rows.shape[0], self.n_phases, rows.shape[-1])], 1)

    def forward(self, audio: Tensor) -> Tensor:
        squeeze = audio.dim() == 1
        audio = audio.unsqueeze(0) if squeeze else audio
        f0 = self.pitch(audio)
        window = 2 * self.pitch.tau_max  # two of the longest periods
        theta = phase_offsets(audio, f0, self.hop_length, self.sample_rate, window, self.n_phases)
        rows = torch.cat([f0[:, None], theta], 1).to(audio.dtype)
        mel = torch.cat([super().forward(audio), rows], 1)
        return mel[0] if squeeze else mel
