"""Small building blocks shared by the density estimators."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

if TYPE_CHECKING:
    from sharedflow.sharing import StepInput

__all__ = ["GateEmbedding", "StepGates", "ZeroConv", "class_rows", "gated", "wn"]


def wn(module: nn.Module) -> nn.Module:
    """Weight normalisation ``w = g v / |v|`` (per output channel), as the references use."""
    return weight_norm(module, name="weight", dim=0)


def class_rows(table: Tensor, labels: Tensor | None, batch: int) -> Tensor:
    """The rows of a class table ``(N, *shape)`` for labels ``(B,)``: ``(B, *shape)``.

    A label ``y < 0`` (a dropped label) or ``labels=None`` takes the mean row, the
    unconditional branch of classifier-free guidance. Labels are checked once where they enter
    a model (``ImageFlow.check_labels``), not here: every layer reads them, and a range check
    reads the labels back from the device.
    """
    mean = table.mean(0, keepdim=True)
    if labels is None:
        return mean.expand(batch, *table.shape[1:])
    picked = table[labels.clamp(min=0)]
    return torch.where((labels < 0).view(-1, *[1] * (table.dim() - 1)), mean, picked)


def gated(a: Tensor) -> Tensor:
    """WaveNet's gate ``tanh(a_1) sigmoid(a_2)`` over the two channel halves of ``a``."""
    filt, gate = a.chunk(2, dim=1)
    return torch.tanh(filt) * torch.sigmoid(gate)


class ZeroConv(nn.Module):
    """Glow's zero-initialised conv with a learned output scale: ``conv(x) exp(3 scale)``.

    Args:
        n_dims: 1 or 2 (``Conv1d`` or ``Conv2d``); ``kernel_size`` odd, "same" padding.
        init_range: weights start ``U(-r, r)`` (0: exactly zero; NanoFlow's WaveFlow: 1e-3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        n_dims: int = 2,
        init_range: float = 0.0,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if n_dims == 2 else nn.Conv1d
        self.conv = conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.uniform_(self.conv.weight, -init_range, init_range)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros((1, out_channels) + (1,) * n_dims))

    def forward(self, x: Tensor, context: object = None) -> Tensor:
        """``(B, C_in, *) -> (B, C_out, *)``; a context (as for any conditioner) is ignored."""
        return self.conv(x) * torch.exp(3 * self.scale)


class StepGates(nn.Module):
    """A step's own multiplicative gates on the residual branch, ``(n_gates, R)``, init 1."""

    def __init__(self, n_gates: int, channels: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.ones(n_gates, channels))


class GateEmbedding:
    """NanoFlow's injection into a WaveNet (WaveFlow, WaveGlow), as a mixin of the net.

    A weight-normed 1x1 conv per layer maps the step embedding ``e_k`` to ``b_l`` (2R channels),
    added to that layer's gate pre-activation; each step owns gates ``(n_gates, R)`` on the
    residual branch. The net calls ``init_gate_embedding``, and ``gate`` and ``gate_residual``
    in each layer.
    """

    channels: int

    def init_gate_embedding(self, embedding_dim: int, n_layers: int, n_gates: int) -> None:
        self.embedding_dim = embedding_dim
        self.n_gates = n_gates
        self.embedding_convs = nn.ModuleList(
            wn(nn.Conv1d(embedding_dim, 2 * self.channels, 1))
            for _ in range(n_layers if embedding_dim else 0)
        )

    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return (self.embedding_dim,)

    def init_embedding(self, weight: Tensor) -> None:
        nn.init.orthogonal_(weight)

    def make_step_params(self) -> nn.Module:
        return StepGates(self.n_gates, self.channels)

    def step_bias(self, embedding: Tensor, params: nn.Module) -> Tensor:
        """``(emb,) -> (n_layers, 2R)``: each layer's 1x1 conv of the step embedding."""
        e = embedding.reshape(1, -1, 1)
        return torch.cat([conv(e) for conv in self.embedding_convs], dim=0).squeeze(-1)

    def gate(self, a: Tensor, layer: int, step: StepInput | None) -> Tensor:
        """Layer ``layer``'s gate ``tanh(a_1) sigmoid(a_2)`` of its pre-activation
        ``(B, 2R, *positions)``, the step's bias ``b_l`` added first."""
        if step is not None:
            a = a + _per_channel(step.bias[layer], a)
        return gated(a)

    def gate_residual(self, res: Tensor, layer: int, step: StepInput | None) -> Tensor:
        """The residual branch ``(B, R, *positions)`` times the step's own gates."""
        return res if step is None else res * _per_channel(step.params.gate[layer], res)

    def drop_embedding_path(self) -> None:
        self.embedding_convs = nn.ModuleList()


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """``(C,)`` shaped to broadcast over the channels of ``like`` ``(B, C, *positions)``."""
    return values.view(1, -1, *([1] * (like.dim() - 2)))
