"""Fréchet Inception Distance between model samples and held-out images, with local weights.

FID ``= |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))`` over Inception pool features.
Nothing is downloaded: the user supplies a TorchScript feature extractor that maps uint8 images
``(N, 3, H, W)`` to features ``(N, F)`` (NVIDIA's ``inception-2015-12-05.pt``, the network
TarFlow's evaluation uses, is one). TorchScript loads without running Python code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["FIDError", "frechet_distance", "load_extractor", "sample_fid"]


class FIDError(FileNotFoundError):
    """No usable Inception weights on this machine."""


def load_extractor(path: str | Path | None) -> torch.jit.ScriptModule:
    if path is None or not Path(path).is_file():
        raise FIDError(
            f"FID needs Inception weights on this machine (got {path}); pass --fid PATH to a "
            "TorchScript feature extractor, uint8 (N, 3, H, W) -> (N, F), such as NVIDIA's "
            "inception-2015-12-05.pt. sharedflow downloads nothing."
        )
    return torch.jit.load(str(path), map_location="cpu").eval()


@torch.no_grad()
def _features(extractor: nn.Module, images: Tensor, batch: int = 64) -> np.ndarray:
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    chunks = [extractor(images[i : i + batch]).double() for i in range(0, len(images), batch)]
    return torch.cat(chunks).flatten(1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets ``(N, F)``.

    ``S_1 S_2`` is similar to the symmetric ``M = S_1^(1/2) S_2 S_1^(1/2)``, so
    ``tr (S_1 S_2)^(1/2) = sum_i sqrt(lambda_i(M))``: two symmetric eigendecompositions, real
    throughout, with rounding's tiny negative eigenvalues clipped to 0.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def sample_fid(
    model: nn.Module,
    held_out: Dataset,
    extractor: nn.Module,
    n: int = 1000,
    **sample_options: object,
) -> float:
    """FID of ``n`` samples against (up to ``n``) held-out images."""
    real = torch.cat([batch[0] for batch in DataLoader(held_out, batch_size=256)])[:n]
    labels = None
    if getattr(model, "num_classes", 0):
        labels = torch.arange(n) % model.num_classes
    fake = model.sample(n, labels, **sample_options)
    return frechet_distance(_features(extractor, real), _features(extractor, fake))
