"""Invertible layers, each a ``Bijection``."""

from sharedflow.layers.actnorm import ActNorm
from sharedflow.layers.affine import AffineParam, ExpAffine, InverseAffine, Shift, SigmoidAffine
from sharedflow.layers.autoregressive import (
    AffineAutoregressive,
    CausalNet,
    ShiftedInput,
    ShiftedOutput,
)
from sharedflow.layers.coupling import AdditiveCoupling, AffineCoupling
from sharedflow.layers.invconv import InvertibleConv1x1, LUInvertibleConv1x1
from sharedflow.layers.lapped import LappedScale
from sharedflow.layers.permute import (
    Flip,
    Permutation,
    bipartize,
    random_permutation,
    reverse,
)
from sharedflow.layers.reshape import Fold2d, GroupFold, Patchify, Squeeze2d
from sharedflow.layers.shift import ContextShift
from sharedflow.layers.split import SplitOff

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineAutoregressive",
    "AffineCoupling",
    "AffineParam",
    "CausalNet",
    "ContextShift",
    "ExpAffine",
    "Flip",
    "Fold2d",
    "GroupFold",
    "InverseAffine",
    "InvertibleConv1x1",
    "LUInvertibleConv1x1",
    "LappedScale",
    "Patchify",
    "Permutation",
    "Shift",
    "ShiftedInput",
    "ShiftedOutput",
    "SigmoidAffine",
    "SplitOff",
    "Squeeze2d",
    "bipartize",
    "random_permutation",
    "reverse",
]
