"""Context encoders of the vocoders: mel frames to the sample rate, folded like the audio.

Both map ``(mel (B, n_mels, F), data shape (B, T))`` to the context the couplings read: the mel
upsampled to ``>= T`` samples, cut to the first ``T`` (as the references train), then folded
exactly as the waveform is folded.

- ``WaveGlowUpsampler``: one learned ``ConvTranspose1d(n_mels, n_mels, 1024, stride 256)``
  (``256 F + 768`` samples), folded to ``(B, n_mels * n_group, T / n_group)`` with channel
  ``n_group * bin + offset``.
- ``WaveFlowUpsampler``: the mel as a one-channel image, two weight-normed
  ``ConvTranspose2d(1, 1, (3, 2s), stride (1, s), padding (1, s / 2))`` each followed by
  LeakyReLU(0.4), folded to ``(B, n_mels, h, T / h)`` (``h = None``: one column,
  ``(B, n_mels, T, 1)``). The strides multiply to the hop length
  (:func:`upsample_strides`; ``16 x 16`` for the references' 256), so ``F`` frames give at least
  ``hop F`` samples. An optional frame-rate network (``sharedflow.audio.frames.FrameNet``)
  transforms the mel first; the references have none.
- ``SourceUpsampler``: for a mel with f0 and phase rows (``PitchedMel``), another upsampler's
  context with a harmonic source at the f0 (``sharedflow.audio.source``) folded beside it,
  ``(B, n_mels + K, h, T / h)``; the source is locked to the phase rows, which synthesis
  zeroes (``PitchedMel.for_synthesis``). Rows for a source-filter estimate of the audio and
  the log-gains of its residual's noise may follow. The references have none.

The mel is cast to the upsampler's dtype here, not before: the f0 row stays float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedflow.layers.reshape import fold
from sharedflow.nets.common import wn

__all__ = ["SourceUpsampler", "WaveFlowUpsampler", "WaveGlowUpsampler", "upsample_strides"]


def upsample_strides(hop_length: int) -> tuple[int, int]:
    """Two strides ``s1 <= s2`` with ``s1 s2 = hop``, as equal as the factors allow.

    ``256 -> (16, 16)`` (the references), ``300 -> (15, 20)``, ``512 -> (16, 32)``.
    """
    if hop_length < 1:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    s1 = max(d for d in range(1, int(hop_length**0.5) + 1) if hop_length % d == 0)
    return s1, hop_length // s1


def _crop(upsampled: Tensor, n_samples: int) -> Tensor:
    if upsampled.shape[-1] < n_samples:
        raise ValueError(
            f"the mel covers {upsampled.shape[-1]} samples, fewer than the {n_samples} asked for"
        )
    return upsampled[..., :n_samples]


class WaveGlowUpsampler(nn.Module):
    """``(B, n_mels, F) -> (B, n_mels * n_group, T / n_group)`` (see the module docstring)."""

    def __init__(
        self, n_mels: int = 80, n_group: int = 8, hop_length: int = 256, kernel_size: int = 1024
    ) -> None:
        super().__init__()
        self.n_group = n_group
        self.upsample = nn.ConvTranspose1d(n_mels, n_mels, kernel_size, stride=hop_length)

    def forward(self, mel: Tensor, shape: Sequence[int]) -> Tensor:
        up = _crop(self.upsample(mel.to(self.upsample.weight.dtype)), shape[-1])  # (B, n_mels, T)
        return fold(up, self.n_group).flatten(1, 2)


class WaveFlowUpsampler(nn.Module):
    """``(B, n_mels, F) -> (B, n_mels, h, T / h)`` (see the module docstring)."""

    def __init__(
        self,
        height: int | None = 16,
        strides: Sequence[int] = (16, 16),
        frames: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.height = height
        self.frames = frames
        self.layers = nn.ModuleList(
            wn(nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2)))
            for s in strides
        )

    def forward(self, mel: Tensor, shape: Sequence[int]) -> Tensor:
        mel = mel.to(next(self.parameters()).dtype)
        up = (mel if self.frames is None else self.frames(mel)).unsqueeze(1)
        for layer in self.layers:
            up = F.leaky_relu(layer(up), 0.4)
        return fold(_crop(up.squeeze(1), shape[-1]), self.height)  # (B, n_mels, h, T / h)


class SourceUpsampler(nn.Module):
    """``(B, n_mels + 1 + P, F) -> (B, n_mels + C (+ 1 or 2), h, T / h)``: ``upsampler``'s context
    of the mel rows, then ``source``'s excitation of the f0 row, folded alike. The source is
    locked to the ``P = source.phase_rows`` phase rows (the audio's own fundamental, or each
    harmonic), as the likelihood is; synthesis, having no audio, zeroes them. With
    ``amplitudes``, one more row: the estimate ``sum_k A_k e_k`` of the voiced audio, ``A_k``
    the mel's amplitudes of the harmonics (a ``ContextShift`` then subtracts it from the audio).

    Args:
        upsampler: the mel's context encoder (``WaveFlowUpsampler``).
        source: ``HarmonicSource``, ``(f0 (B, F), T, theta (B, P, F)) -> (B, C, T)``, its
            ``K`` sines first.
        height: the fold (``None``: one column).
        amplitudes: ``HarmonicAmplitudes``, ``(log_mel, f0) -> (B, K, F)``, or None: no
            estimate row.
        gains: ``NoiseGains``, with ``amplitudes``: one more row after the estimate, ``log H``
            of what the estimate leaves (a ``LappedScale`` then whitens the residual with it).
    """

    def __init__(
        self,
        upsampler: nn.Module,
        source: nn.Module,
        height: int | None,
        amplitudes: nn.Module | None = None,
        gains: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if gains is not None and amplitudes is None:
            raise ValueError("the noise gains are of what the estimate leaves: give amplitudes")
        self.upsampler = upsampler
        self.source = source
        self.height = height
        self.amplitudes = amplitudes
        self.gains = gains

    def forward(self, mel: Tensor, shape: Sequence[int]) -> Tensor:
        phases = self.source.phase_rows
        log_mel, f0 = mel[:, : -1 - phases], mel[:, -1 - phases].float()
        up = self.upsampler(log_mel, shape)
        theta = mel[:, -phases:]
        excitation = self.source(f0, shape[-1], theta)
        if self.amplitudes is not None:
            amplitude, fitted = self.amplitudes.fit(log_mel.float(), f0)
            a = self.source.envelope(amplitude, f0, shape[-1])
            rows = [excitation, (a * excitation[:, : a.shape[1]]).sum(1, keepdim=True)]
            if self.gains is not None:
                rows.append(self.gains(log_mel, fitted, shape[-1]))
            excitation = torch.cat(rows, 1)
        return torch.cat([up, fold(excitation.to(up.dtype), self.height)], 1)
