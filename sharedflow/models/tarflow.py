"""TarFlow (Zhai et al. 2024, "Normalizing Flows are Capable Generative Models") and
NanoFlow-TarFlow.

Images ``(B, C, H, W)`` become ``T = HW / p^2`` patch tokens of ``D = C p^2`` features; then
``n_blocks`` affine autoregressive flows over the tokens, each a causal Transformer whose outputs
are shifted right by one token (the first token passes unchanged), ``z = (x - b) exp(-a)``.
Blocks alternate direction: odd blocks read the tokens reversed and give them back in raster
order. The base is a standard normal; the shift-only variant samples with the running variance
of its latents (``RunningVarianceNormal``), as TarFlow does.

``sharing`` builds the blocks' Transformers: independent (TarFlow), shared, decomposed (a shared
body with per-block input and output projections) or nanoflow (plus block embeddings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from sharedflow.core import (
    Inverse,
    NormalizingFlow,
    RunningVarianceNormal,
    Sequential,
    StandardNormal,
)
from sharedflow.core.bijection import Bijection
from sharedflow.layers import AffineAutoregressive, InverseAffine, Patchify, Shift, ShiftedOutput
from sharedflow.layers.permute import reverse
from sharedflow.models.image import ImageFlow, Sampling
from sharedflow.nets.transformer import CausalTransformer, Guidance, zero_output
from sharedflow.sharing import Sharing, SharingMode, as_sharing

__all__ = ["TarFlow", "tarflow"]


class TarFlow(ImageFlow):
    """An ``ImageFlow`` whose estimators are causal Transformers, which sampling can guide."""

    def sampling_context(
        self,
        labels: Tensor | None,
        guidance: float = 0.0,
        attn_temp: float = 1.0,
        annealed: bool = False,
        **options: Any,
    ) -> Any:
        """The labels, or with ``guidance`` a ``Guidance`` context (``nets.transformer``):

        - ``guidance``: classifier-free guidance weight ``w`` (``h_c + w (h_c - h_u)``);
        - ``attn_temp``: attention temperature of the unconditional branch (TarFlow's
          guidance for unconditional models, with ``guidance != 0``);
        - ``annealed``: ramp the guidance weight over the tokens.
        """
        super().sampling_context(labels, **options)  # any other option is refused
        return Guidance(labels, guidance, attn_temp, annealed) if guidance else labels


def tarflow(
    image_size: int = 64,
    in_channels: int = 3,
    patch_size: int = 2,
    channels: int = 768,
    n_blocks: int = 8,
    n_layers: int = 8,
    num_classes: int = 0,
    affine: bool = True,
    noise: str = "gaussian",
    noise_std: float = 0.05,
    label_drop: float = 0.1,
    sharing: Sharing | SharingMode = "independent",
    embedding_dim: int = 0,
    sampling: Sampling | Mapping[str, Any] | None = None,
) -> TarFlow:
    """TarFlow; ``tarflow(64, 3, 2, 768, 8, 8)`` is the ImageNet-64 model (460,142,784).

    Args:
        affine: ``(a, b)`` per feature; False gives the volume-preserving shift-only variant
            (``z = x + h``: TarFlow's ``x - b`` with ``proj_out`` negated).
        sampling: how samples are drawn by default (``models.image.Sampling``: temperature,
            denoising, guidance).
    """
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch {patch_size}")
    n_tokens = (image_size // patch_size) ** 2
    n_features = in_channels * patch_size**2
    n_out = 2 * n_features if affine else n_features
    mode = as_sharing(sharing, embedding_dim)
    # A shared body with heads of each block's own: the projections in and out are per block.
    per_block = mode.shared_body and mode.own_heads
    estimators = mode.build(
        n_blocks,
        lambda emb: CausalTransformer(
            0 if per_block else n_features,
            channels,
            n_tokens,
            n_layers,
            num_classes,
            0 if per_block else n_out,
            emb,
        ),
        (lambda k: zero_output(channels, n_out)) if per_block else None,
        make_stem=(lambda k: nn.Linear(n_features, channels)) if per_block else None,
    )
    param = InverseAffine("scale_shift") if affine else Shift()
    patchify = Patchify(patch_size, in_channels, image_size, image_size)
    layers: list[Bijection] = [patchify]
    for k, estimator in enumerate(estimators):
        flow = AffineAutoregressive(ShiftedOutput(estimator), param, param_dim=-1)
        layers += [flow] if k % 2 == 0 else [reverse(n_tokens, 1), flow, reverse(n_tokens, 1)]
    layers.append(Inverse(Patchify(patch_size, in_channels, image_size, image_size)))
    shape = (in_channels, image_size, image_size)
    base = StandardNormal(shape) if affine else RunningVarianceNormal(shape)
    flow = NormalizingFlow(Sequential(layers), base)
    return TarFlow(flow, shape, num_classes, 2.0, noise, noise_std, label_drop, sampling)
