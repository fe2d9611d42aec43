"""Glow (Kingma & Dhariwal 2018) and NanoFlow-Glow (Lee et al. 2020), multi-scale.

Images in ``[-0.5, 0.5)``. ``n_levels`` levels, each: a 2x2 squeeze, ``n_steps`` steps of
[ActNorm, LU 1x1 conv, affine coupling ``z_b = (x_b + t) sigmoid(s + 2)``], then (except the last)
a split whose learned prior ``N(mu(z_a), sigma(z_a))`` on the split-off half is an
``InverseAffine`` coupling; a learned top prior ends the last level. Each level ends by undoing
its squeeze, so the latent is one tensor shaped like the image, under a standard normal.

That latent is Glow's factored-out latent *standardised by its priors*: a split-off half
``z_2`` enters it as ``(z_2 - mu(z_1)) exp(-log sigma(z_1))`` and the top latent as
``(z - mu) exp(-log sigma)``, so ``log p`` is the same while the latent itself is not Glow's (to
sample Glow's, invert with the priors; ``sample`` does). Estimators are shared per level, as in
NanoFlow's reference.

Class-conditional (``num_classes > 0``): every coupling estimator adds a class row to its first
layer (``nets.glow.GlowConvNet``) and the top prior adds one to its mean and log-scale
(``layers.prior.LearnedPrior``, Glow-PyTorch's ``y_condition``); ``label_drop`` trains the
unconditional branch (the mean rows), which bits per dim are evaluated with, as TarFlow's.

Presets:
- ``glow``: Glow-PyTorch's estimator (3x3 -> 1x1 -> zero 3x3), one per step.
- ``nanoflow_glow``: NanoFlow's six-layer 3x3 estimator with a zero 1x1 head, built in any
  sharing mode: ``independent`` is Glow-large, ``shared`` NanoFlow-naive, ``decomposed``
  NanoFlow-decomp, ``nanoflow`` NanoFlow (embedding of ``d 2^level`` channels per step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sharedflow.core import Inverse, NormalizingFlow, Sequential, StandardNormal
from sharedflow.core.bijection import Bijection
from sharedflow.layers import (
    ActNorm,
    AffineCoupling,
    InverseAffine,
    LUInvertibleConv1x1,
    SigmoidAffine,
    SplitOff,
    Squeeze2d,
)
from sharedflow.layers.prior import LearnedPrior
from sharedflow.models.image import ImageFlow, Sampling
from sharedflow.nets import ZeroConv
from sharedflow.nets.glow import GlowConvNet
from sharedflow.sharing import Independent, Sharing, SharingMode, as_sharing

__all__ = ["glow", "nanoflow_glow"]


def _multiscale(
    image_size: int,
    in_channels: int,
    n_levels: int,
    n_steps: int,
    hidden: int,
    kernel_sizes: Sequence[int],
    head_kernel: int,
    sharing: Sharing,
    num_classes: int,
) -> NormalizingFlow:
    def level(index: int, channels: int, size: int) -> Bijection:
        c, s = channels * 4, size // 2  # after the squeeze
        half = c // 2
        estimators = sharing.build(
            n_steps,
            lambda emb: GlowConvNet(
                half, hidden, kernel_sizes, emb * 2**index, (s, s), num_classes
            ),
            lambda k: ZeroConv(hidden, c, head_kernel),
        )
        layers: list[Bijection] = [Squeeze2d(2)]
        for estimator in estimators:
            layers += [
                ActNorm(c),
                LUInvertibleConv1x1(c),
                AffineCoupling(estimator, param=SigmoidAffine("interleaved")),
            ]
        if index == n_levels - 1:
            top = ZeroConv(2 * c, 2 * c, 3)
            param = InverseAffine("shift_scale")
            layers.append(LearnedPrior(top, (2 * c, s, s), param, num_classes))
        else:
            prior = ZeroConv(half, c, 3)
            layers.append(AffineCoupling(prior, param=InverseAffine("interleaved")))
            layers.append(SplitOff(level(index + 1, half, s), half, "last"))
        layers.append(Inverse(Squeeze2d(2)))  # the latent keeps the input's shape
        return Sequential(layers)

    if image_size % 2**n_levels:
        raise ValueError(f"image size {image_size} cannot be squeezed {n_levels} times")
    transform = level(0, in_channels, image_size)
    shape = (in_channels, image_size, image_size)
    return NormalizingFlow(transform, StandardNormal(shape))


def _task(
    flow: NormalizingFlow,
    num_classes: int,
    noise: Literal["uniform", "gaussian"],
    noise_std: float,
    label_drop: float,
    sampling: Sampling | Mapping[str, Any] | None,
) -> ImageFlow:
    """The flow as an ``ImageFlow`` over ``[-0.5, 0.5)``."""
    shape = flow.base.event_shape
    return ImageFlow(flow, shape, num_classes, 1.0, noise, noise_std, label_drop, sampling)


def glow(
    image_size: int = 32,
    in_channels: int = 3,
    n_levels: int = 3,
    n_steps: int = 32,
    hidden: int = 512,
    noise: Literal["uniform", "gaussian"] = "uniform",
    noise_std: float = 0.05,
    sampling: Sampling | Mapping[str, Any] | None = None,
    num_classes: int = 0,
    label_drop: float = 0.0,
) -> ImageFlow:
    """Glow as in Glow-PyTorch (affine, LU, learn_top); hidden 256 has 15,972,912 params.

    ``noise``: Glow's uniform dequantisation, or Gaussian noise augmentation of ``noise_std``
    (in units of half the range, as TarFlow's); ``sampling``: how samples are drawn by default
    (``models.image.Sampling``); ``num_classes`` and ``label_drop``: class conditioning (see
    the module docstring)."""
    flow = _multiscale(
        image_size, in_channels, n_levels, n_steps, hidden, (3, 1), 3, Independent(), num_classes
    )
    return _task(flow, num_classes, noise, noise_std, label_drop, sampling)


def nanoflow_glow(
    image_size: int = 32,
    in_channels: int = 3,
    n_levels: int = 3,
    n_steps: int = 32,
    hidden: int = 256,
    n_estimator_layers: int = 6,
    sharing: Sharing | SharingMode = "nanoflow",
    embedding_dim: int = 1,
    noise: Literal["uniform", "gaussian"] = "uniform",
    noise_std: float = 0.05,
    sampling: Sampling | Mapping[str, Any] | None = None,
    num_classes: int = 0,
    label_drop: float = 0.0,
) -> ImageFlow:
    """NanoFlow's image models; ``sharing=Independent()`` is Glow-large (287,488,560).

    ``embedding_dim`` goes with a mode given by name (``"nanoflow"``); a ``NanoFlow`` object
    carries its own. ``noise``, ``noise_std``, ``sampling``, ``num_classes`` and
    ``label_drop`` as ``glow``."""
    flow = _multiscale(
        image_size,
        in_channels,
        n_levels,
        n_steps,
        hidden,
        (3,) * n_estimator_layers,
        1,
        sharing if isinstance(sharing, Sharing) else as_sharing(sharing, embedding_dim),
        num_classes,
    )
    return _task(flow, num_classes, noise, noise_std, label_drop, sampling)
