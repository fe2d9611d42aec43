"""WaveFlow (Ping et al. 2020) and NanoFlow on WaveFlow (Lee et al. 2020).

The waveform ``(B, T)`` is folded into ``(B, 1, h, T/h)`` (consecutive samples down a column);
each flow is an affine autoregressive transform over the ``h`` rows whose estimator is a
``WaveNet2D`` conditioned on the mel folded the same way, and the rows (of audio and mel) are
reversed, or bipartized, between flows. The latent is unfolded back to ``(B, T)``.

``height=None`` is the paper's autoregressive limit ``h = T``: the whole signal is one column
(the nets' width kernel is then 1), every sample is generated from the ones before it within
the receptive field, and synthesis has no column whose first row starts without a past. The
estimator sees only its receptive field, so a model trained on segments synthesises a clip of
any length as one column; generation is ``T`` sequential row steps per flow.

Two published layouts, as two presets of one assembly:

- ``waveflow`` (L0SG/NanoFlow's ``models/waveflow.py``, the one NanoFlow's numbers use): every
  row transformed from the rows above through a zero row on top (``ShiftedInput``), residual
  ``(h + res) sqrt(1/2)``, a ``ZeroConv`` projection with a learned scale, the permutation before
  each flow. ``sharing`` picks independent (WaveFlow), shared (NanoFlow-naive), decomposed or
  nanoflow.
- ``waveflow_parakeet`` (L0SG/WaveFlow, a port of Parakeet): row 0 copied (``ShiftedOutput``),
  plain residual, a zero-initialised 1x1 projection, the permutation after each flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from torch import nn

from sharedflow.audio.envelope import HarmonicAmplitudes
from sharedflow.audio.frames import FrameNet
from sharedflow.audio.mel import MelSpectrogram, PitchedMel
from sharedflow.audio.noise import NoiseGains
from sharedflow.audio.source import HarmonicSource
from sharedflow.audio.upsample import SourceUpsampler, WaveFlowUpsampler, upsample_strides
from sharedflow.core import Inverse, NormalizingFlow, Sequential, StandardNormal
from sharedflow.core.bijection import Bijection
from sharedflow.layers import (
    AffineAutoregressive,
    ContextShift,
    Fold2d,
    LappedScale,
    ShiftedInput,
    ShiftedOutput,
)
from sharedflow.layers.permute import Flip, bipartize, reverse
from sharedflow.models.vocoder import Vocoder
from sharedflow.nets import WaveNet2D, ZeroConv, height_dilations
from sharedflow.sharing import (
    Independent,
    Sharing,
    SharingMode,
    StepEstimator,
    as_sharing,
)

__all__ = ["waveflow", "waveflow_parakeet"]

PermutationKind = Literal["flip", "bipartize"]


def _permutations(height: int | None, n_flows: int, kind: PermutationKind) -> list[Bijection]:
    """Reverse every flow's rows; with bipartize the second half of the flows reverse halves."""
    if height is None:
        if kind != "flip":
            raise ValueError(f"a one-column WaveFlow (height None) flips its rows, not {kind!r}")
        return [Flip(dim=2, context_dim=2) for _ in range(n_flows)]
    flips: list[Bijection] = [reverse(height, dim=2, context_dim=2) for _ in range(n_flows)]
    if kind == "flip":
        return flips
    return flips[: n_flows // 2] + [
        bipartize(height, dim=2, context_dim=2) for _ in range(n_flows - n_flows // 2)
    ]


def _assemble(
    estimators: list[StepEstimator],
    *,
    wrap: Callable[[StepEstimator], nn.Module],
    permute_first: bool,
    height: int | None,
    permutation: PermutationKind,
    mel: MelSpectrogram,
    temperature: float = 1.0,
    frames: nn.Module | None = None,
    source: HarmonicSource | None = None,
    amplitudes: HarmonicAmplitudes | None = None,
    gains: NoiseGains | None = None,
) -> Vocoder:
    """Fold, one autoregressive flow per estimator with its row permutation, unfold; a
    ``source`` is read beside the mel (``SourceUpsampler``; ``mel`` then has an f0 row), and
    with ``amplitudes`` the flows model the audio minus the source's estimate of it
    (``ContextShift``, before the first permutation moves the context's rows), with ``gains``
    whitened by the mel's envelope of that residual (``LappedScale``)."""
    layers: list[Bijection] = [Fold2d(height)]
    if amplitudes:
        layers.append(ContextShift(-2 if gains else -1))
    if gains:
        layers.append(LappedScale(gains.block))
    permutations = _permutations(height, len(estimators), permutation)
    for estimator, perm in zip(estimators, permutations, strict=True):
        flow = AffineAutoregressive(wrap(estimator))
        layers += [perm, flow] if permute_first else [flow, perm]
    layers.append(Inverse(Fold2d(height)))
    upsampler: nn.Module = WaveFlowUpsampler(height, upsample_strides(mel.hop_length), frames)
    if source is not None:
        upsampler = SourceUpsampler(upsampler, source, height, amplitudes, gains)
    flow = NormalizingFlow(Sequential(layers), StandardNormal(), upsampler)
    multiple = math.lcm(height or 1, gains.block if gains else 1)
    return Vocoder(flow, mel, length_multiple=multiple, temperature=temperature)


def waveflow(
    height: int | None = 16,
    channels: int = 64,
    n_layers: int = 8,
    n_flows: int = 8,
    dilation_cycle: int = 1,
    permutation: PermutationKind = "flip",
    sharing: Sharing | SharingMode = "independent",
    embedding_dim: int = 0,
    n_mels: int = 80,
    sample_rate: int = 22050,
    hop_length: int = 256,
    mel: Mapping[str, Any] | None = None,
    residual_scale: float | None = None,
    temperature: float = 1.0,
    frame_layers: int = 0,
    frame_channels: int = 128,
    source_harmonics: int = 0,
    source_quadrature: bool = False,
    source_mean: bool = False,
    source_aligned: bool = False,
    source_noise: bool = False,
    source_max_hz: float | None = None,
    source_noise_floor: float = 0.1,
    f0_min: float = 60.0,
    f0_max: float = 500.0,
) -> Vocoder:
    """WaveFlow as in L0SG/NanoFlow, with any NanoFlow sharing mode.

    ``waveflow(16, 64)`` has 5,950,180 parameters; ``waveflow(16, 128, sharing="nanoflow",
    embedding_dim=512)`` is NanoFlow-h16-r128-emb512 (3,865,188; 2,818,530 deployed).
    ``residual_scale``: ``s`` in ``r <- s (r + res)``; the recipes state it. Unset, it is the
    reference's: 1 for a body that reads flow embeddings (NanoFlow's, which has per-flow gates
    instead), sqrt(1/2) otherwise. ``embedding_dim`` goes with a mode given by name.
    ``mel``: the front end's other settings (``n_fft``, ``win_length``, ``f_min``, ``f_max``),
    by default the references' 22.05 kHz ones; the upsampler's strides follow ``hop_length``.
    ``temperature``: synthesis's default (1.0, the paper's; a lightly trained model sounds
    cleaner lower). ``height=None``: one column (see the module docstring).
    ``frame_layers > 0`` puts a ``FrameNet`` of that depth and ``frame_channels`` width before
    the upsampler (not in the references, so 0 keeps their parameter counts).
    ``source_harmonics = K > 0`` makes the front end a ``PitchedMel`` (f0 searched in ``f0_min
    .. f0_max`` Hz) and gives every layer a ``HarmonicSource`` of ``K`` sines at that f0 beside
    the mel, as neural source-filter vocoders do (not in the references either), and with
    ``source_quadrature`` ``K`` cosines too; ``source_mean`` makes the flows model the audio
    minus ``sum_k A_k sin(k (phi + theta))``, the source's harmonics weighted by their
    amplitudes in the mel (``HarmonicAmplitudes``): a source-filter estimate of the voiced
    audio, which the nets also read, as one more context row; ``source_aligned`` locks each
    harmonic to the audio's in training, not the fundamental alone (the front end then has
    ``K`` phase rows). ``source_noise`` also whitens that residual by the envelope the mel
    leaves for it (``NoiseGains``, ``LappedScale`` over blocks of one hop; the nets read its
    log-gains as one more row), so that the flows start from noise of the right spectrum and
    loudness; lengths are then a multiple of the hop as well. ``source_max_hz`` leaves the
    harmonics above it out of the estimate (they stay in the source), for the noise to take.
    """
    mode = as_sharing(sharing, embedding_dim)
    if source_mean and source_harmonics < 1:
        raise ValueError("source_mean is a harmonic source's estimate: set source_harmonics > 0")
    if source_noise and not source_mean:
        raise ValueError("source_noise shapes what the estimate leaves: set source_mean=true")
    if residual_scale is None:
        residual_scale = 1.0 if mode.embedding_dim else math.sqrt(0.5)
    dilations = height_dilations(n_layers, dilation_cycle)
    source = (
        HarmonicSource(
            source_harmonics, sample_rate, hop_length, source_quadrature, source_aligned
        )
        if source_harmonics > 0
        else None
    )
    settings = dict(hop_length=hop_length, n_mels=n_mels, **(mel or {}))
    front = (
        PitchedMel(
            sample_rate, f0_min=f0_min, f0_max=f0_max, n_phases=source.phase_rows, **settings
        )
        if source
        else MelSpectrogram(sample_rate, **settings)
    )
    estimators = mode.build(
        n_flows,
        lambda emb: WaveNet2D(
            context_channels=n_mels
            + (source.channels + int(source_mean) + int(source_noise) if source else 0),
            channels=channels,
            n_layers=n_layers,
            height_dilations=dilations,
            residual_scale=residual_scale,
            embedding_dim=emb,
            width_kernel=1 if height is None else None,
        ),
        lambda k: ZeroConv(channels, 2, init_range=1e-3),
    )
    return _assemble(
        estimators,
        wrap=ShiftedInput,
        permute_first=True,
        height=height,
        permutation=permutation,
        mel=front,
        temperature=temperature,
        frames=FrameNet(n_mels, frame_channels, frame_layers) if frame_layers else None,
        source=source,
        amplitudes=(
            HarmonicAmplitudes(
                front.basis,
                front.n_fft,
                front.win_length,
                sample_rate,
                source_harmonics,
                max_frequency=source_max_hz,
            )
            if source_mean
            else None
        ),
        gains=(NoiseGains(front, hop_length, source_noise_floor) if source_noise else None),
    )


def _zero_projection(channels: int) -> nn.Module:
    projection = nn.Conv2d(channels, 2, 1)
    nn.init.zeros_(projection.weight)
    nn.init.zeros_(projection.bias)
    return projection


def waveflow_parakeet(
    height: int = 16,
    channels: int = 64,
    n_layers: int = 8,
    n_flows: int = 8,
    dilation_cycle: int = 1,
    permutation: PermutationKind = "flip",
    n_mels: int = 80,
    sample_rate: int = 22050,
    hop_length: int = 256,
    mel: Mapping[str, Any] | None = None,
) -> Vocoder:
    """WaveFlow as in L0SG/WaveFlow (Parakeet): ``waveflow_parakeet(16, 64)`` has 5,950,164."""
    dilations = height_dilations(n_layers, dilation_cycle)
    estimators = Independent().build(
        n_flows,
        lambda emb: WaveNet2D(
            context_channels=n_mels,
            channels=channels,
            n_layers=n_layers,
            height_dilations=dilations,
        ),
        lambda k: _zero_projection(channels),
    )
    return _assemble(
        estimators,
        wrap=lambda e: ShiftedOutput(e, context_dim=2),
        permute_first=False,
        height=height,
        permutation=permutation,
        mel=MelSpectrogram(sample_rate, hop_length=hop_length, n_mels=n_mels, **(mel or {})),
    )
