"""Tiny instances of every bijection in sharedflow, for the contract tests.

Each case builds ``(bijection, x, context)`` from a seed; building twice with the same seed gives
the same architecture, so a state_dict moves between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import sharedflow as sf
from sharedflow.layers.prior import LearnedPrior
from sharedflow.nets import PointwiseMLP, WaveNet2D, ZeroConv
from sharedflow.nets.glow import GlowConvNet
from sharedflow.nets.transformer import CausalTransformer
from sharedflow.sharing import build_estimators


@dataclass
class Case:
    bijection: sf.Bijection
    x: Tensor
    context: Tensor | None = None
    dead: tuple[str, ...] = ()  # parameters the reference applies to a zero input: no gradient


def _mlp(c_in: int, c_out: int, context_channels: int = 0) -> PointwiseMLP:
    return PointwiseMLP(c_in, c_out, hidden=8, context_channels=context_channels, zero_init=False)


def _coupling(param: sf.AffineParam, n_params: int = 2) -> Callable[[], Case]:
    def build() -> Case:
        net = _mlp(2, n_params * 3, context_channels=2)
        return Case(
            sf.AffineCoupling(net, param=param), torch.randn(3, 5, 4), torch.randn(3, 2, 4)
        )

    return build


def _wavenet(embedding_dim: int = 0, dilations: list[int] | None = None) -> WaveNet2D:
    return WaveNet2D(
        1, 3, channels=4, n_layers=3, height_dilations=dilations, embedding_dim=embedding_dim
    )


def _autoregressive_input_shift() -> Case:
    conditioner = sf.ShiftedInput(_head(_wavenet(dilations=[1, 2, 1])))
    x, mel = torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4)
    return Case(sf.AffineAutoregressive(conditioner), x, mel)


def _one_column_waveflow_like() -> Case:
    """WaveFlow with ``h = T``: nets of width kernel 1 over one column, flipped between flows."""

    def net() -> sf.StepEstimator:
        return _head(WaveNet2D(1, 3, 4, 3, [1, 2, 4], width_kernel=1))

    flows = sf.Sequential(
        sf.Fold2d(None),
        sf.AffineAutoregressive(sf.ShiftedInput(net())),
        sf.Flip(dim=2, context_dim=2),
        sf.AffineAutoregressive(sf.ShiftedInput(net())),
        sf.Inverse(sf.Fold2d(None)),
    )
    return Case(flows, torch.randn(2, 7), torch.randn(2, 3, 7, 1))


def _autoregressive_output_shift() -> Case:
    conditioner = sf.ShiftedOutput(_head(_wavenet()), context_dim=2)
    x, mel = torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4)
    return Case(sf.AffineAutoregressive(conditioner), x, mel)


def _autoregressive_nanoflow() -> Case:
    (estimator,) = build_estimators(
        1, _wavenet, lambda k: ZeroConv(4, 2, init_range=0.1), "nanoflow", embedding_dim=3
    )
    x, mel = torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4)
    return Case(sf.AffineAutoregressive(sf.ShiftedInput(estimator)), x, mel)


def _coupling_nanoflow_mlp() -> Case:
    (estimator,) = build_estimators(
        1,
        lambda e: PointwiseMLP(2, 6, hidden=8, zero_init=False, embedding_dim=e),
        None,
        "nanoflow",
        3,
    )
    return Case(sf.AffineCoupling(estimator), torch.randn(3, 5, 4))


def _head(net: WaveNet2D) -> sf.StepEstimator:
    return sf.StepEstimator(net, ZeroConv(4, 2, init_range=0.1))


def _split(position: str) -> Case:
    inner = sf.Sequential(sf.InvertibleConv1x1(3), sf.AffineCoupling(_mlp(1, 4)))
    return Case(sf.SplitOff(inner, 2, position), torch.randn(3, 5, 4))


def _glow_level() -> Case:
    prior = sf.AffineCoupling(_mlp(4, 8), param=sf.InverseAffine("interleaved"))
    level = sf.Sequential(
        sf.Squeeze2d(2),
        sf.ActNorm(8),
        sf.LUInvertibleConv1x1(8),
        sf.AffineCoupling(_mlp(4, 8), param=sf.SigmoidAffine()),
        prior,
        sf.SplitOff(sf.Sequential(sf.ActNorm(4)), 4, "last"),
    )
    return Case(level, torch.randn(2, 2, 4, 4))


def _waveflow_like() -> Case:
    net = _wavenet()
    flows = sf.Sequential(
        sf.AffineAutoregressive(sf.ShiftedInput(_head(net))),
        sf.reverse(4, dim=2, context_dim=2),
        sf.AffineAutoregressive(sf.ShiftedInput(_head(_wavenet()))),
        sf.bipartize(4, dim=2, context_dim=2),
    )
    return Case(flows, torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4))


def _learned_prior() -> Case:
    prior = LearnedPrior(ZeroConv(4, 4, 3), (4, 2, 2), sf.InverseAffine("shift_scale"))
    return Case(prior, torch.randn(3, 2, 2, 2), dead=("net.conv.weight",))


def _learned_prior_classes() -> Case:
    prior = LearnedPrior(ZeroConv(4, 4, 3), (4, 2, 2), sf.InverseAffine("shift_scale"), 3)
    with torch.no_grad():
        prior.class_table.normal_()  # zero at init: make the classes differ
    labels = torch.tensor([2, 0, -1])
    return Case(prior, torch.randn(3, 2, 2, 2), labels, dead=("net.conv.weight",))


def _transformer_autoregressive() -> Case:
    net = CausalTransformer(3, 64, 4, 1, num_classes=2, n_out=6)
    flow = sf.AffineAutoregressive(sf.ShiftedOutput(net), sf.InverseAffine(), param_dim=-1)
    return Case(flow, torch.randn(2, 5, 3), torch.tensor([1, -1]))


def _glow_nanoflow_coupling() -> Case:
    (estimator,) = build_estimators(
        1,
        lambda e: GlowConvNet(2, 6, (3, 1), e, (2, 2)),
        lambda k: ZeroConv(6, 4, 3, init_range=0.1),
        "nanoflow",
        1,
    )
    return Case(sf.AffineCoupling(estimator, param=sf.SigmoidAffine()), torch.randn(2, 4, 2, 2))


def _glow_coupling_classes() -> Case:
    (estimator,) = build_estimators(
        1,
        lambda e: GlowConvNet(2, 6, (3, 1), e, (2, 2), num_classes=3),
        lambda k: ZeroConv(6, 4, 3, init_range=0.1),
        "independent",
    )
    with torch.no_grad():
        estimator.net.class_table.normal_()
    labels = torch.tensor([1, -1])
    return Case(
        sf.AffineCoupling(estimator, param=sf.SigmoidAffine()), torch.randn(2, 4, 2, 2), labels
    )


CASES: dict[str, Callable[[], Case]] = {
    "learned-prior": _learned_prior,
    "learned-prior-classes": _learned_prior_classes,
    "coupling-glow-classes": _glow_coupling_classes,
    "autoregressive-transformer": _transformer_autoregressive,
    "coupling-glow-nanoflow": _glow_nanoflow_coupling,
    "actnorm-1d": lambda: Case(sf.ActNorm(3, n_spatial=1), torch.randn(4, 3, 5) * 2 + 1),
    "actnorm-2d": lambda: Case(sf.ActNorm(3), torch.randn(4, 3, 2, 3) * 2 + 1),
    "invconv-1d": lambda: Case(sf.InvertibleConv1x1(4), torch.randn(2, 4, 5)),
    "invconv-2d": lambda: Case(sf.InvertibleConv1x1(3), torch.randn(2, 3, 2, 3)),
    "lu-invconv-2d": lambda: Case(sf.LUInvertibleConv1x1(4), torch.randn(2, 4, 2, 3)),
    "coupling-exp": _coupling(sf.ExpAffine()),
    "coupling-exp-clamped": _coupling(sf.ExpAffine(clamp=2.0)),
    "coupling-sigmoid": _coupling(sf.SigmoidAffine()),
    "coupling-inverse": _coupling(sf.InverseAffine("shift_scale")),
    "coupling-nanoflow-mlp": _coupling_nanoflow_mlp,
    "coupling-additive": lambda: Case(sf.AdditiveCoupling(_mlp(2, 3)), torch.randn(3, 5, 4), None),
    "autoregressive-shifted-input": _autoregressive_input_shift,
    "autoregressive-shifted-output": _autoregressive_output_shift,
    "autoregressive-nanoflow": _autoregressive_nanoflow,
    "group-fold": lambda: Case(sf.GroupFold(4), torch.randn(2, 16)),
    "fold-2d": lambda: Case(sf.Fold2d(4), torch.randn(2, 16)),
    "fold-2d-one-column": lambda: Case(sf.Fold2d(None), torch.randn(2, 7)),
    "context-shift": lambda: Case(
        sf.ContextShift(), torch.randn(2, 1, 4, 3), torch.randn(2, 3, 4, 3)
    ),
    "lapped-scale": lambda: Case(
        sf.LappedScale(8), torch.randn(2, 1, 4, 8), 0.5 * torch.randn(2, 3, 4, 8)
    ),
    "lapped-scale-one-column": lambda: Case(
        sf.LappedScale(4), torch.randn(2, 1, 12, 1), 0.5 * torch.randn(2, 2, 12, 1)
    ),
    "squeeze-2d": lambda: Case(sf.Squeeze2d(2), torch.randn(2, 2, 4, 4)),
    "patchify": lambda: Case(sf.Patchify(2, 3, 4, 4), torch.randn(2, 3, 4, 4)),
    "reverse": lambda: Case(sf.reverse(5), torch.randn(2, 5, 3)),
    "flip": lambda: Case(sf.Flip(dim=2), torch.randn(2, 1, 5, 1)),
    "bipartize": lambda: Case(sf.bipartize(4, dim=2), torch.randn(2, 1, 4, 3)),
    "random-permutation": lambda: Case(sf.random_permutation(6, seed=3), torch.randn(2, 6, 2)),
    "split-off-first": lambda: _split("first"),
    "split-off-last": lambda: _split("last"),
    "glow-level": _glow_level,
    "waveflow-like": _waveflow_like,
    "one-column-waveflow-like": _one_column_waveflow_like,
    "inverse-of-coupling": lambda: Case(
        sf.Inverse(sf.AffineCoupling(_mlp(2, 6))), torch.randn(3, 5, 4)
    ),
}
