"""Density estimators (conditioners); none of them is invertible."""

from sharedflow.nets.common import ZeroConv
from sharedflow.nets.mlp import LinearHead, PointwiseMLP
from sharedflow.nets.wavenet2d import WaveNet2D, height_dilations

__all__ = ["LinearHead", "PointwiseMLP", "WaveNet2D", "ZeroConv", "height_dilations"]
