"""A spectrogram of a resynthesis against its original: where harmonics show, or do not."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["plot_spectrograms"]


def plot_spectrograms(
    original: Tensor, resynthesis: Tensor, sample_rate: int, title: str, path: Path
) -> Path:
    """Two log-magnitude spectrograms of ``(T,)`` signals (1024-point STFT, hop 256, an 80 dB
    range below each one's peak, 0 to 4 kHz, where the harmonics live) above each other, as a
    png at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    pairs = zip(axes, (original, resynthesis), ("original", title), strict=True)
    for ax, signal, name in pairs:
        signal = signal.detach().float().cpu()
        window = torch.hann_window(1024, dtype=signal.dtype)
        spec = torch.stft(signal, 1024, 256, window=window, return_complex=True).abs()
        db = 20 * torch.log10(spec.clamp(1e-5))
        ax.imshow(
            db.numpy(),
            origin="lower",
            aspect="auto",
            vmin=float(db.max()) - 80,
            extent=(0, len(signal) / sample_rate, 0, sample_rate / 2000),
            cmap="magma",
        )
        ax.set_ylim(0, min(sample_rate / 2000, 4))
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
