"""``NoiseGains``: the spectral envelope of what a harmonic estimate leaves of the audio.

A source-filter estimate (``sharedflow.audio.envelope``) rebuilds the harmonics; the rest of
speech is noise shaped by the vocal tract: fricatives and bursts in unvoiced frames, breath
between the harmonics of voiced ones. Its mel is what the harmonics do not explain,

    r = max(m - Q A, floor m)          (m = exp(log_mel); Q A the harmonics' mel; linear)

floored at ``floor`` of the mel (-20 dB at 0.1) so that no band is taken as noiseless. Read as
a flat magnitude over each band (``r_j / sum_f M_jf``, exact for a flat spectrum), placed at the
band's centroid and interpolated linearly in frequency (flat beyond the first and last), it
gives the expected STFT magnitude of the residual at every frequency. For noise of per-sample
variance ``s^2`` that magnitude is ``(sqrt(pi) / 2) s sqrt(sum_n w[n]^2)`` (a Rayleigh mean,
``w`` the STFT's window), so the residual's standard deviation per unit bandwidth is

    H(f) = |X(f)| / ((sqrt(pi) / 2) sqrt(sum_n w[n]^2)),

the gain that turns unit white noise into it. ``forward`` evaluates ``H`` at the lapped
transform's frequencies ``(k + 1/2) sr / (2 L)`` for every block of ``L`` samples, from the mel
frame nearest the block's centre ``b L + L``, and lays ``log H`` out one coefficient per sample
(``sharedflow.layers.lapped``): a ``LappedScale`` ahead of the flows whitens the residual
with it, and synthesis at temperature 1 starts from noise of the mel's own envelope.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from sharedflow.audio.mel import MelSpectrogram

__all__ = ["NoiseGains"]


class NoiseGains(nn.Module):
    """``log_mel (B, n_mels, F)`` and the harmonics' mel ``(B, n_mels, F)`` to ``log H (B, 1,
    T)``, ``T = N L`` (see the module docstring).

    Args:
        mel: the front end the log-mel was made with (``MelSpectrogram``: its filterbank ``M``,
            Hann window, sample rate and hop).
        block: ``L``, the lapped transform's block.
        floor: the least fraction of each band's mel taken as noise.
    """

    def __init__(self, mel: MelSpectrogram, block: int, floor: float = 0.1) -> None:
        super().__init__()
        weights = mel.basis.detach().double().cpu().numpy()  # (n_mels, n_fft / 2 + 1)
        bins = np.arange(mel.n_fft // 2 + 1) * mel.sample_rate / mel.n_fft
        width = weights.sum(1)
        centres = (weights * bins).sum(1) / width
        freqs = (np.arange(block) + 0.5) * mel.sample_rate / (2 * block)
        interp = np.stack([np.interp(freqs, centres, e) for e in np.eye(len(centres))], 1)
        n = mel.win_length
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as the mel's
        scale = 1 / (math.sqrt(math.pi) / 2 * math.sqrt(float(np.square(hann).sum())))
        # (L, n_mels): band mel to the gains of the block's L frequencies; a plain tensor, not
        # a buffer, like HarmonicAmplitudes's, so that a cast to bf16 does not round it
        self.project = torch.from_numpy(interp / width * scale).float()
        self.hop_length = mel.hop_length
        self.block = block
        self.floor = floor

    def forward(self, log_mel: Tensor, fitted: Tensor, n_samples: int) -> Tensor:
        if n_samples % self.block:
            raise ValueError(f"{n_samples} samples are not a whole number of {self.block}-blocks")
        mel = log_mel.float().exp()
        residual = torch.maximum(mel - fitted.float(), self.floor * mel)
        gains = self.project.to(mel.device) @ residual  # (B, L, F)
        centres = torch.arange(1, n_samples // self.block + 1, device=mel.device) * self.block
        frames = torch.div(centres + self.hop_length // 2, self.hop_length, rounding_mode="floor")
        gains = gains[..., frames.clamp_max(mel.shape[-1] - 1)]  # (B, L, N)
        return gains.clamp_min(1e-12).log().transpose(1, 2).reshape(mel.shape[0], 1, n_samples)
