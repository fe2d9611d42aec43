"""The graphs a trained flow is exported as: plain modules with tensor inputs and outputs.

- ``Synthesis`` (vocoders): ``mel (B, n_mels, F)`` and ``noise (B, hop F)`` to
  ``audio (B, hop F)``, where ``noise`` is the latent, ``temperature * N(0, 1)``. It runs the
  same inverse as ``Vocoder.synthesize``: WaveFlow's row loop (one step per row, with the
  per-layer ring caches), WaveGlow's couplings. An optional ``Denoiser`` follows.
- ``ImageSampling``: ``noise (B, C, H, W)`` (and ``labels (B,)`` for a class-conditional
  model) to ``images (B, C, H, W)`` uint8: Glow's inverse, or TarFlow's KV-cache loop (one
  scan over the tokens per block).
- ``BitsPerDim`` (image flows): continuous ``x (B, C, H, W)`` in the model's data range
  (already dequantised), and for a class-conditional model ``labels (B,)`` (int64; -1 for
  none), to bits per dim ``(B,)``.

The model given is expected in its deploy form (``sharedflow.sharing.deploy``).
"""

from __future__ import annotations

from torch import Tensor, nn

from sharedflow.core.metrics import bits_per_dim

__all__ = ["BitsPerDim", "ImageSampling", "Synthesis"]


class Synthesis(nn.Module):
    """``(mel, noise) -> audio``; see the module docstring."""

    def __init__(
        self, vocoder: nn.Module, denoiser: nn.Module | None = None, strength: float = 0.1
    ) -> None:
        super().__init__()
        self.vocoder = vocoder
        self.denoiser = denoiser
        self.strength = strength

    def forward(self, mel: Tensor, noise: Tensor) -> Tensor:
        audio = self.vocoder.decode(mel, noise)
        return audio if self.denoiser is None else self.denoiser(audio, self.strength)


class ImageSampling(nn.Module):
    """``noise [, labels] -> images`` (uint8)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, noise: Tensor, labels: Tensor | None = None) -> Tensor:
        x, _ = self.model.flow.transform.inverse(noise, labels)
        return self.model.to_uint8(x)


class BitsPerDim(nn.Module):
    """``x [, labels] -> bpd``; ``x`` continuous in the model's range, 8-bit bins."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        log_prob = self.model.log_prob(x, labels)
        return bits_per_dim(log_prob, self.model.n_dims, 8, self.model.data_range)
