"""WaveGlow (Prenger et al. 2019) and NanoFlow on WaveGlow.

Audio ``(B, T)`` is grouped into ``(B, n_group, T / n_group)``; each flow is an invertible 1x1
conv and an affine coupling (first half conditions, ``z_b = x_b exp(log_s) + b``) whose estimator
is a ``WN`` conditioned on the upsampled, grouped mel. Every ``n_early_every`` flows the first
``n_early_size`` channels leave early for the latent, so later flows see fewer channels. The
latent is ungrouped back to ``(B, T)``.

NVIDIA's legacy ``glow_old.py`` (``waveglow_old.pt``) alternated the halves: in odd flows the
second half conditions and the first is transformed. ``alternate_halves=True`` builds that
variant (a swap of the halves around each odd coupling) for its converted checkpoints.

Each flow's estimator is ``end(WN(start(x_a)))``: ``start`` (a stem) and ``end`` (a head) are
sized by that flow's width, the WN body is what NanoFlow shares. With ``sharing="nanoflow"`` one
WN serves all flows, told apart by flow embeddings and gates; no published code has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sharedflow.audio.mel import MelSpectrogram
from sharedflow.audio.upsample import WaveGlowUpsampler
from sharedflow.core import Inverse, NormalizingFlow, Sequential, StandardNormal
from sharedflow.core.bijection import Bijection
from sharedflow.layers import (
    AffineCoupling,
    ExpAffine,
    GroupFold,
    InvertibleConv1x1,
    Permutation,
    SplitOff,
)
from sharedflow.models.vocoder import Vocoder
from sharedflow.nets.wn import WN, wn_end, wn_start
from sharedflow.sharing import Sharing, SharingMode, as_sharing

__all__ = ["flow_widths", "waveglow"]


def flow_widths(n_flows: int, n_group: int, n_early_every: int, n_early_size: int) -> list[int]:
    """Channels each flow sees: ``[8] * 4 + [6] * 4 + [4] * 4`` for the reference."""
    widths, width = [], n_group
    for k in range(n_flows):
        if k and n_early_every and k % n_early_every == 0:
            width -= n_early_size
        widths.append(width)
    return widths


def _swap_halves(width: int) -> Permutation:
    """``[x_a, x_b] -> [x_b, x_a]`` over channels (equal halves: its own inverse)."""
    if width % 2:
        raise ValueError(f"alternating halves needs even widths, got {width}")
    half = width // 2
    return Permutation([*range(half, width), *range(half)], dim=1)


def waveglow(
    n_flows: int = 12,
    n_group: int = 8,
    n_early_every: int = 4,
    n_early_size: int = 2,
    channels: int = 256,
    n_layers: int = 8,
    kernel_size: int = 3,
    sharing: Sharing | SharingMode = "independent",
    embedding_dim: int = 0,
    n_mels: int = 80,
    sample_rate: int = 22050,
    hop_length: int = 256,
    upsample_kernel: int = 1024,
    alternate_halves: bool = False,
    mel: Mapping[str, Any] | None = None,
) -> Vocoder:
    """WaveGlow; the defaults are NVIDIA's ``config.json`` (87,879,272 parameters).

    ``alternate_halves``: ``glow_old.py``'s coupling order (see the module docstring).
    ``mel``: the front end's other settings (``n_fft``, ``win_length``, ``f_min``, ``f_max``),
    by default the reference's 22.05 kHz ones.
    """
    widths = flow_widths(n_flows, n_group, n_early_every, n_early_size)
    mode = as_sharing(sharing, embedding_dim)
    if mode.shared_body and not mode.own_heads and len(set(widths)) > 1:
        raise ValueError(
            "the shared mode reuses one start/end projection, so every flow needs the same "
            "width: set n_early_every=0, or use decomposed/nanoflow"
        )
    estimators = mode.build(
        n_flows,
        lambda emb: WN(n_mels * n_group, channels, n_layers, kernel_size, emb),
        lambda k: wn_end(channels, 2 * (widths[k] - widths[k] // 2)),
        make_stem=lambda k: wn_start(widths[k] // 2, channels),
    )
    steps: list[list[Bijection]] = []
    for k, (width, estimator) in enumerate(zip(widths, estimators, strict=True)):
        coupling: list[Bijection] = [AffineCoupling(estimator, param=ExpAffine("shift_scale"))]
        if alternate_halves and k % 2:
            coupling = [_swap_halves(width), *coupling, _swap_halves(width)]
        steps.append([InvertibleConv1x1(width), *coupling])
    # Nest from the last flow outwards: each early output wraps the flows after it.
    inner: Bijection = Sequential([layer for step in steps[-1:] for layer in step])
    for k in range(n_flows - 2, -1, -1):
        if widths[k] != widths[k + 1]:
            inner = SplitOff(inner, widths[k] - widths[k + 1], "first")
        inner = Sequential([*steps[k], inner])
    transform = Sequential(GroupFold(n_group), inner, Inverse(GroupFold(n_group)))
    upsampler = WaveGlowUpsampler(n_mels, n_group, hop_length, upsample_kernel)
    front_end = MelSpectrogram(sample_rate, hop_length=hop_length, n_mels=n_mels, **(mel or {}))
    flow = NormalizingFlow(transform, StandardNormal(), upsampler)
    return Vocoder(flow, front_end, n_group, temperature=0.6)  # NVIDIA's inference sigma
