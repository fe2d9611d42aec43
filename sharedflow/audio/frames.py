"""``FrameNet``: a residual conv stack over mel frames, run before a vocoder's upsampler.

The references feed the log-mel to every WaveNet layer through a 1x1 conv, so each layer sees a
linear function of one (upsampled) frame. Quantities that are non-linear in the mel and span
frames, the pitch above all, are then left to the autoregressive net. A frame-rate network in
front of the upsampler (as LPCNet's) computes them once per frame:

    c <- c + W_o phi(conv_L(... phi(conv_1(c))))      (B, n_mels, F) -> (B, n_mels, F)

with ``K``-tap "same" convs over frames of width ``H``, ``phi = tanh``, and ``W_o`` a 1x1 conv
that starts at zero, so an untrained stack is the identity and the upsampler sees the mel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrameNet"]


class FrameNet(nn.Module):
    """``(B, n_mels, F) -> (B, n_mels, F)``, the mel plus a learned correction (see above).

    Args:
        n_mels: mel bands in and out.
        channels: the hidden width ``H``.
        n_layers: the hidden convs ``L`` (at least 1); the receptive field is ``L (K - 1) + 1``
            frames, centred.
        kernel_size: ``K``, odd.
    """

    def __init__(self, n_mels: int, channels: int = 128, n_layers: int = 2, kernel_size: int = 3):
        super().__init__()
        if n_layers < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"a frame net needs n_layers >= 1 and an odd kernel, got {n_layers}, {kernel_size}"
            )
        widths = [n_mels] + [channels] * n_layers
        self.hidden = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Conv1d(channels, n_mels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, mel: Tensor) -> Tensor:
        h = mel
        for conv in self.hidden:
            h = torch.tanh(conv(h))
        return mel + self.out(h)
