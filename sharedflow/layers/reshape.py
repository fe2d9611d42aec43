"""Volume-preserving reshapes (``log|det| = 0``), with the channel orders of the references.

- ``GroupFold(n)``: WaveGlow's grouping ``(B, T) -> (B, n, T/n)``, ``z[b, j, g] = x[b, n g + j]``.
- ``Fold2d(h)``: WaveFlow's squeeze ``(B, T) -> (B, 1, h, T/h)``: column ``w`` holds samples
  ``w h .. w h + h - 1`` top to bottom, so consecutive samples run down the height axis.
  ``Fold2d(None)``: one column, ``h = T`` (``(B, 1, T, 1)``), WaveFlow's autoregressive limit.
- ``Squeeze2d(f)``: Glow's ``(B, C, H, W) -> (B, C f^2, H/f, W/f)``, channel ``c f^2 + dy f + dx``.
- ``Patchify(p)``: TarFlow's ``(B, C, H, W) -> (B, T, D)``, ``T = HW/p^2`` tokens in raster order,
  ``D = C p^2`` features in ``(c, ky, kx)`` order (``F.unfold``'s).
"""

from __future__ import annotations

from torch import Tensor

from sharedflow.core.bijection import Bijection, Context, zeros_logdet

__all__ = ["Fold2d", "GroupFold", "Patchify", "Squeeze2d", "fold", "unfold"]


def fold(x: Tensor, n: int | None) -> Tensor:
    """``(..., T) -> (..., n, T / n)``: column ``w`` holds ``x[..., w n : w n + n]`` top to bottom;
    ``n = None`` is one column, ``(..., T, 1)``.

    The one fold of waveforms: ``GroupFold`` and ``Fold2d`` apply it to the audio, and the
    vocoders' upsamplers to the upsampled mel, so audio and context line up sample for sample.
    """
    if n is None:
        return x.unsqueeze(-1)
    return x.reshape(*x.shape[:-1], -1, n).transpose(-1, -2)


def unfold(z: Tensor) -> Tensor:
    """The inverse of ``fold``: ``(..., n, W) -> (..., n W)``."""
    return z.transpose(-1, -2).reshape(*z.shape[:-2], -1)


def _check_divisible(size: int, factor: int, what: str) -> None:
    if size % factor:
        raise ValueError(f"{what} {size} is not divisible by {factor}")


class GroupFold(Bijection):
    """``(B, T) -> (B, n_group, T / n_group)``, WaveGlow's ``unfold(1, n, n)``."""

    def __init__(self, n_group: int) -> None:
        super().__init__()
        self.n_group = n_group

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        _check_divisible(x.shape[1], self.n_group, "length")
        return fold(x, self.n_group), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return unfold(z), zeros_logdet(z)


class Fold2d(Bijection):
    """``(B, T) -> (B, 1, h, T / h)``, WaveFlow's squeeze; ``height=None``: ``(B, 1, T, 1)``."""

    def __init__(self, height: int | None) -> None:
        super().__init__()
        self.height = height

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        if self.height is not None:
            _check_divisible(x.shape[1], self.height, "length")
        return fold(x, self.height).unsqueeze(1), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        return unfold(z.squeeze(1)), zeros_logdet(z)


class Squeeze2d(Bijection):
    """``(B, C, H, W) -> (B, C f^2, H / f, W / f)``, Glow's space-to-depth."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        f = self.factor
        _check_divisible(h, f, "height")
        _check_divisible(w, f, "width")
        z = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return z.reshape(b, c * f * f, h // f, w // f), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = z.shape
        f = self.factor
        x = z.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (f * f), h * f, w * f), zeros_logdet(z)


class Patchify(Bijection):
    """``(B, C, H, W) -> (B, HW / p^2, C p^2)``, TarFlow's patch sequence."""

    def __init__(self, patch_size: int, n_channels: int, height: int, width: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.image_shape = (n_channels, height, width)

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images {self.image_shape}, got {tuple(x.shape[1:])}")
        b, c, h, w = x.shape
        p = self.patch_size
        z = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return z.reshape(b, (h // p) * (w // p), c * p * p), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        c, h, w = self.image_shape
        p = self.patch_size
        x = z.reshape(z.shape[0], h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(z.shape[0], c, h, w), zeros_logdet(z)
