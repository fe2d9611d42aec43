"""WaveFlow's density estimator: a dilated 2-D WaveNet, causal along the height (Ping et al. 2020).

Input ``x (B, C_in, h, W)`` (the folded waveform), context ``c (B, C_c, h, W)`` (the folded mel).
With residual stream ``r`` and layer ``l`` of height dilation ``d_l`` and width dilation ``2^l``:

    a_l = conv3x3_l(pad_top(r)) + M_l c [+ b_l]      (2R channels; b_l: NanoFlow step bias)
    g_l = tanh(a_l[:R]) sigmoid(a_l[R:]);  [res_l, skip_l] = V_l g_l
    r <- s (r + gate_l res_l)                        (s = sqrt(1/2) in NanoFlow's WaveFlow)

and the output is ``sum_l skip_l``, ``(B, R, h, W)``; the last layer's residual half, which the
reference computes and never uses, is skipped. The 3x3 convs see rows ``i, i - d, i - 2d`` only,
so output row ``i`` depends on input rows ``<= i``: a causal net along dim 2.

Generation runs row by row: ``init_cache`` computes the context terms ``M_l c`` of all layers
once (one GEMM over positions, channels-last), and each layer keeps a queue of its past input
rows, so ``step`` costs one row of work per layer for any height dilation.

NanoFlow (``embedding_dim > 0``): a weight-normed 1x1 conv per layer maps the step embedding to
``b_l``, and each step owns gates ``(n_layers, R)`` (init 1) on the residual branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedflow.core.bijection import Context
from sharedflow.layers.autoregressive import CausalNet
from sharedflow.nets.common import GateEmbedding, gated, wn
from sharedflow.sharing import StepInput

__all__ = ["WaveNet2D", "height_dilations"]

CHANNELS_LAST = torch.channels_last


def height_dilations(n_layers: int, cycle: int) -> list[int]:
    """``d_l = 2^(l mod cycle)``: cycle 1 gives all 1 (h <= 16); h=32 in the paper is cycle 3."""
    return [2 ** (layer % cycle) for layer in range(n_layers)]


@dataclass
class RowCache:
    """Row-by-row state: per-layer queues of past inputs and the precomputed context terms."""

    queues: list[Tensor]  # layer l: (B, R, 2 d_l + h, W), the top 2 d_l rows zero padding
    context_terms: list[Tensor]  # layer l: (B, 2R, h, W)
    step: StepInput | None


class WaveNet2D(GateEmbedding, CausalNet):
    """Dilated 2-D WaveNet, causal in height (see the module docstring).

    Args:
        in_channels: channels of the folded signal (1 for WaveFlow).
        context_channels: mel bands (80).
        channels: R, residual = gate = skip width (64 or 128 in the paper).
        n_layers: number of gated layers (8).
        height_dilations: ``d_l`` per layer; default all 1.
        kernel_size: the height and width kernel (3).
        residual_scale: ``s`` above: ``sqrt(0.5)`` (NanoFlow's WaveFlow) or 1 (Parakeet's).
        embedding_dim: NanoFlow step-embedding size; 0 for none.
    """

    dim = 2

    def __init__(
        self,
        in_channels: int = 1,
        context_channels: int = 80,
        channels: int = 64,
        n_layers: int = 8,
        height_dilations: Sequence[int] | None = None,
        kernel_size: int = 3,
        residual_scale: float = 1.0,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.residual_scale = residual_scale
        self.height_dilations = list(height_dilations or [1] * n_layers)
        if len(self.height_dilations) != n_layers:
            raise ValueError(
                f"{len(self.height_dilations)} height dilations for {n_layers} layers"
            )
        self.width_dilations = [2**layer for layer in range(n_layers)]
        self.front = wn(nn.Conv2d(in_channels, channels, 1))
        self.convs = nn.ModuleList(
            wn(nn.Conv2d(channels, 2 * channels, kernel_size, dilation=(d, w)))
            for d, w in zip(self.height_dilations, self.width_dilations, strict=True)
        )
        self.context_convs = nn.ModuleList(
            wn(nn.Conv2d(context_channels, 2 * channels, 1)) for _ in range(n_layers)
        )
        self.res_skip = nn.ModuleList(
            wn(nn.Conv2d(channels, 2 * channels, 1)) for _ in range(n_layers)
        )
        self.init_gate_embedding(embedding_dim, n_layers, n_layers)

    # -- the network ------------------------------------------------------------------------------
    def context_terms(self, context: Tensor) -> list[Tensor]:
        """``M_l c`` of every layer, once per call: ``(B, C_c, h, W) -> n x (B, 2R, h, W)``.

        One GEMM over positions; the result is channels-last, so that generation reads one row
        of each layer's term at a time cheaply.
        """
        weight = torch.cat([conv.weight for conv in self.context_convs]).flatten(1)
        bias = torch.cat([conv.bias for conv in self.context_convs])
        terms = F.linear(context.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        return list(terms.chunk(len(self.context_convs), dim=1))

    def _layer(
        self, layer: int, conv_out: Tensor, cond: Tensor, residual: Tensor, step: StepInput | None
    ) -> tuple[Tensor, Tensor]:
        """One gated layer after its dilated conv: returns ``(new residual, skip)``."""
        a = conv_out + cond
        if step is not None:
            a = a + step.bias[layer].view(1, -1, 1, 1)
        res_skip = self.res_skip[layer]
        if layer == len(self.res_skip) - 1:  # the last residual half is never used: skip only
            r = self.channels
            return residual, F.conv2d(gated(a), res_skip.weight[r:], res_skip.bias[r:])
        res, skip = F.conv2d(gated(a), res_skip.weight, res_skip.bias).chunk(2, dim=1)
        if step is not None:
            res = res * step.params.gate[layer].view(1, -1, 1, 1)
        return (residual + res) * self.residual_scale, skip

    def _pad(self, layer: int) -> tuple[int, int, int, int]:
        d, w = self.height_dilations[layer], self.width_dilations[layer]
        k = self.kernel_size - 1
        return (w * k // 2, w * k // 2, d * k, 0)  # (left, right, top, bottom)

    def forward(self, x: Tensor, context: Context = None, step: StepInput | None = None) -> Tensor:
        """``(B, C_in, h, W), (B, C_c, h, W) -> (B, R, h, W)``."""
        r = self.front(x)
        skips = 0
        for layer, cond in enumerate(self.context_terms(context)):
            conv_out = self.convs[layer](F.pad(r, self._pad(layer)))
            r, skip = self._layer(layer, conv_out, cond, r, step)
            skips = skips + skip
        return skips

    @torch.no_grad()
    def prepare_deploy(self) -> None:
        """Store conv weights channels-last: the row convolutions of generation run 2-3x faster."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=CHANNELS_LAST)

    def init_cache(self, x: Tensor, context: Context, step: StepInput | None = None) -> RowCache:
        b, _, h, w = x.shape
        queues = [
            torch.empty(
                b,
                self.channels,
                (self.kernel_size - 1) * d + h,
                w,
                device=x.device,
                dtype=x.dtype,
                memory_format=CHANNELS_LAST,
            ).zero_()
            for d in self.height_dilations
        ]
        return RowCache(queues, self.context_terms(context), step)

    def step(self, cache: RowCache, x_i: Tensor, i: int) -> Tensor:
        """Output row ``i`` from input row ``x_i (B, C_in, 1, W)``: ``(B, R, 1, W)``."""
        r = F.conv2d(x_i, self.front.weight, self.front.bias)
        skips = 0
        k = self.kernel_size - 1
        for layer, conv in enumerate(self.convs):
            d, w = self.height_dilations[layer], self.width_dilations[layer]
            queue = cache.queues[layer]
            queue[:, :, k * d + i].copy_(r[:, :, 0])
            window = queue[:, :, i : i + k * d + 1 : d]  # rows i - kd .. i, every d-th
            conv_out = F.conv2d(
                window, conv.weight, conv.bias, dilation=(1, w), padding=(0, w * k // 2)
            )
            cond = cache.context_terms[layer][:, :, i : i + 1]
            r, skip = self._layer(layer, conv_out, cond, r, cache.step)
            skips = skips + skip
        return skips
