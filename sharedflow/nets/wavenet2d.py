"""WaveFlow's density estimator: a dilated 2-D WaveNet, causal along the height (Ping et al. 2020).

Input ``x (B, C_in, h, W)`` (the folded waveform), context ``c (B, C_c, h, W)`` (the folded mel).
With residual stream ``r`` and layer ``l`` of height dilation ``d_l`` and width dilation ``2^l``:

    a_l = conv3x3_l(pad_top(r)) + M_l c [+ b_l]      (2R channels; b_l: NanoFlow step bias)
    g_l = tanh(a_l[:R]) sigmoid(a_l[R:]);  [res_l, skip_l] = V_l g_l
    r <- s (r + gate_l res_l)                        (s = sqrt(1/2) in NanoFlow's WaveFlow)

and the output is ``sum_l skip_l``, ``(B, R, h, W)``; the last layer's residual half, which the
reference computes and never uses, is skipped. The 3x3 convs see rows ``i, i - d, i - 2d`` only,
so output row ``i`` depends on input rows ``<= i``: a causal net along dim 2.

Generation runs row by row, channels-last: each layer keeps its last ``K`` input rows per height
dilation phase in a ring (``RowCache``), so ``step`` costs one row of work per layer for any
height dilation, and the memory does not grow with ``h``. ``init_cache`` rewrites the
weights once so that a layer's row is a conv, a GEMM of the context row accumulated in place, one
sigmoid, one ``addcmul`` and the residual GEMM; the skip GEMMs of all layers are one per row.
With ``width_kernel=1`` (a one-column WaveFlow, ``W = 1``) a row's conv is one GEMM of its
``K`` input rows, ``(B W, K R) @ (K R, 2R)``.

NanoFlow (``embedding_dim > 0``): a weight-normed 1x1 conv per layer maps the step embedding to
``b_l``, and each step owns gates ``(n_layers, R)`` (init 1) on the residual branch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedflow.core.bijection import Context
from sharedflow.layers.autoregressive import CausalNet
from sharedflow.nets.common import GateEmbedding, wn
from sharedflow.sharing import StepInput

__all__ = ["WaveNet2D", "height_dilations"]


def height_dilations(n_layers: int, cycle: int) -> list[int]:
    """``d_l = 2^(l mod cycle)``: cycle 1 gives all 1 (h <= 16); h=32 in the paper is cycle 3."""
    return [2 ** (layer % cycle) for layer in range(n_layers)]


@dataclass
class RowCache:
    """Row-by-row state of one generation: input rings, the context, fused weights.

    All rows are channels-last, ``(B, W, C)``. The inputs of layer ``l`` (dilation ``d``, kernel
    height ``K``) live in ``d`` rings of ``K`` rows, ``(d, B, K, W, R)``: row ``i`` goes to ring
    ``i mod d``, slot ``(i // d) mod K``, so the rows ``i - (K-1) d, ..., i`` that the conv of
    row ``i`` reads are one ring, in rotated order. Each conv weight comes in ``K`` rotations,
    ``roll(w, slot + 1)`` along the kernel height, to match; rows before 0 are the rings'
    initial zeros. The weights are those of the module docstring, rewritten once per cache (see
    ``WaveNet2D.init_cache``).
    """

    rings: list[Tensor]
    context: Tensor  # (B, h, W, C_c)
    context_weights: list[Tensor]  # (C_c, 2R): M_l transposed
    conv_weights: list[list[Tensor]]  # K rotations of (2R, R, K, K_w) (see _row_weight)
    conv_biases: list[Tensor]  # (2R,): conv, context and step biases
    res_weights: list[Tensor]  # (R, R) each, n - 1 of them
    res_biases: list[Tensor]
    skip_weight: Tensor  # (R, n R)
    skip_bias: Tensor  # (R,)


class WaveNet2D(GateEmbedding, CausalNet):
    """Dilated 2-D WaveNet, causal in height (see the module docstring).

    Args:
        in_channels: channels of the folded signal (1 for WaveFlow).
        context_channels: mel bands (80).
        channels: R, residual = gate = skip width (64 or 128 in the paper).
        n_layers: number of gated layers (8).
        height_dilations: ``d_l`` per layer; default all 1.
        kernel_size: the height and width kernel (3).
        width_kernel: the width kernel, if not ``kernel_size``: 1 for a one-column WaveFlow,
            whose width taps would read only padding.
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
        width_kernel: int | None = None,
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
        width_kernel = kernel_size if width_kernel is None else width_kernel
        self.front = wn(nn.Conv2d(in_channels, channels, 1))
        self.convs = nn.ModuleList(
            wn(nn.Conv2d(channels, 2 * channels, (kernel_size, width_kernel), dilation=(d, w)))
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

        One GEMM over positions.
        """
        weight = torch.cat([conv.weight for conv in self.context_convs]).flatten(1)
        bias = torch.cat([conv.bias for conv in self.context_convs])
        terms = F.linear(context.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        return list(terms.chunk(len(self.context_convs), dim=1))

    def _layer(
        self, layer: int, conv_out: Tensor, cond: Tensor, residual: Tensor, step: StepInput | None
    ) -> tuple[Tensor, Tensor]:
        """One gated layer after its dilated conv: returns ``(new residual, skip)``."""
        g = self.gate(conv_out + cond, layer, step)
        res_skip = self.res_skip[layer]
        if layer == len(self.res_skip) - 1:  # the last residual half is never used: skip only
            r = self.channels
            return residual, F.conv2d(g, res_skip.weight[r:], res_skip.bias[r:])
        res, skip = F.conv2d(g, res_skip.weight, res_skip.bias).chunk(2, dim=1)
        return (residual + self.gate_residual(res, layer, step)) * self.residual_scale, skip

    def _width_taps(self, layer: int, weight: Tensor, width: int) -> tuple[Tensor, int, int]:
        """Layer ``layer``'s conv weight along the width for an input ``width`` wide, with its
        width dilation and padding.

        When the width dilation is at least ``width``, the off-centre width taps read only the
        zero padding: the conv is then exactly its centre column, a ``K x 1`` conv, which
        skips the padded work (short segments, deep layers)."""
        w, k = self.width_dilations[layer], weight.shape[-1] - 1
        if k == 0:  # a width kernel of 1: no taps to dilate
            return weight, 1, 0
        if w >= width:
            return weight[..., k // 2 : k // 2 + 1], 1, 0
        return weight, w, w * k // 2

    def _conv(self, layer: int, r: Tensor) -> Tensor:
        """Layer ``layer``'s dilated conv of ``r (B, R, h, W)``, causal in height."""
        conv, d, k = self.convs[layer], self.height_dilations[layer], self.kernel_size - 1
        weight, w, pad = self._width_taps(layer, conv.weight, r.shape[-1])
        r = F.pad(r, (pad, pad, d * k, 0))  # (left, right, top, bottom)
        return F.conv2d(r, weight, conv.bias, dilation=(d, w))

    def forward(self, x: Tensor, context: Context = None, step: StepInput | None = None) -> Tensor:
        """``(B, C_in, h, W), (B, C_c, h, W) -> (B, R, h, W)``."""
        r = self.front(x)
        skips = 0
        for layer, cond in enumerate(self.context_terms(context)):
            conv_out = self._conv(layer, r)
            r, skip = self._layer(layer, conv_out, cond, r, step)
            skips = skips + skip
        return skips

    def row_gemm(self, width: int) -> tuple[int, int, int]:
        """``(m, k, n)`` of one row's conv in generation, ``(B W, K K_w R) @ (K K_w R, 2R)``
        for ``B = 1``: the product a row step repeats ``n_layers`` times."""
        conv = self.convs[0]
        return width, conv.in_channels * math.prod(conv.kernel_size), conv.out_channels

    def init_cache(self, x: Tensor, context: Context, step: StepInput | None = None) -> RowCache:
        """Rings and the weights of generation, computed in at least float32, then cast.

        Rewritten once, so that a row costs few kernels: the tanh half of every pre-activation
        is scaled by -2, making ``tanh(a_1) sigmoid(a_2) = s_2 - 2 s_1 s_2`` with
        ``s = sigmoid(a)`` one sigmoid over both halves; the conv, context and step biases are
        summed into the conv bias; the residual scale and NanoFlow's gates go into ``V_l``'s
        residual rows (``r <- s r + s gate (V g + b)``); the skip rows of all layers form one
        matrix, applied once per row to every layer's gate output.
        """
        r, k, n = self.channels, self.kernel_size - 1, len(self.convs)
        wide = torch.promote_types(x.dtype, torch.float32)

        def get(t: Tensor) -> Tensor:
            return t.to(wide)

        def put(t: Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
            return t.to(x.dtype).contiguous(memory_format=memory_format)

        half = x.new_ones(2 * r, dtype=wide)
        half[:r] = -2.0
        biases = [
            get(c.bias) + get(m.bias) for c, m in zip(self.convs, self.context_convs, strict=True)
        ]
        gates = [x.new_ones(r, dtype=wide)] * (n - 1)
        if step is not None:
            biases = [bias + get(b_l) for bias, b_l in zip(biases, step.bias, strict=True)]
            gates = [get(gate) for gate in step.params.gate[: n - 1]]
        gates = [self.residual_scale * gate for gate in gates]
        res = [(get(v.weight[:r, :, 0, 0]), get(v.bias[:r])) for v in self.res_skip[:-1]]
        return RowCache(
            rings=self._rings(x),
            context=put(context.permute(0, 2, 3, 1)),
            context_weights=[
                put((get(m.weight[:, :, 0, 0]) * half[:, None]).T) for m in self.context_convs
            ],
            conv_weights=[
                [
                    self._row_weight(get(c.weight).roll(slot + 1, 2) * half.view(-1, 1, 1, 1), put)
                    for slot in range(k + 1)
                ]
                for c in self.convs
            ],
            conv_biases=[put(bias * half) for bias in biases],
            res_weights=[put(v * gate[:, None]) for (v, _), gate in zip(res, gates, strict=True)],
            res_biases=[put(bias * gate) for (_, bias), gate in zip(res, gates, strict=True)],
            skip_weight=put(torch.cat([v.weight[-r:, :, 0, 0] for v in self.res_skip], 1)),
            skip_bias=put(sum(get(v.bias[-r:]) for v in self.res_skip)),
        )

    @staticmethod
    def _row_weight(weight: Tensor, put: Callable[..., Tensor]) -> Tensor:
        """A conv weight ``(2R, R, K, K_w)`` in the form a row step applies: channels-last for
        a conv; for ``K_w = 1``, a GEMM matrix ``(K R, 2R)`` over the window's rows."""
        if weight.shape[-1] == 1:
            return put(weight[..., 0].permute(2, 1, 0).flatten(0, 1))
        return put(weight, torch.channels_last)

    def _rings(self, x: Tensor) -> list[Tensor]:
        """Zeroed rings ``(d_l, B, K, W, R)`` of every layer, in one allocation."""
        b, w, size = x.shape[0], x.shape[-1], self.kernel_size
        shapes = [(d, b, size, w, self.channels) for d in self.height_dilations]
        flat = x.new_zeros(sum(math.prod(shape) for shape in shapes))
        rings, start = [], 0
        for shape in shapes:
            rings.append(flat.narrow(0, start, math.prod(shape)).view(shape))
            start += math.prod(shape)
        return rings

    @staticmethod
    def _slot(ring: Tensor, i: int) -> tuple[Tensor, int]:
        """Row ``i``'s ring ``(B, K, W, R)`` and its slot in it."""
        d, size = ring.shape[0], ring.shape[2]
        return ring[i % d], (i // d) % size

    def step(self, cache: RowCache, x_i: Tensor, i: int) -> Tensor:
        """Output row ``i`` from input row ``x_i (B, C_in, 1, W)``: ``(B, R, 1, W)``."""
        context = cache.context[:, i].flatten(0, 1)  # (B W, C_c)
        row = self._front_row(x_i)
        gates = []
        for layer, rings in enumerate(cache.rings):
            ring, slot = self._slot(rings, i)
            ring[:, slot].copy_(row)
            weight = cache.conv_weights[layer][slot]  # matches the ring's rotation by the slot
            gates.append(self._gate_row(cache, layer, ring, weight, context))
            if layer < len(cache.rings) - 1:
                row = self._residual_row(cache, layer, gates[-1], ring[:, slot])
        return self._skip_row(cache, gates, x_i)

    def scan_init(self, cache: RowCache) -> tuple[list[Tensor], list[Tensor]]:
        """The row loop as a scan (how ``AffineAutoregressive`` exports it): ``(state, inputs)``.

        The state holds each layer's last ``k d + 1`` input rows, oldest first,
        ``(B, k d + 1, W, R)`` (zeros before row 0); the per-row input is the context row,
        stacked along a leading row axis, ``(h, B, W, C_c)``.
        """
        b, _, w, _ = cache.context.shape
        k = self.kernel_size - 1
        state = [
            cache.context.new_zeros(b, k * d + 1, w, self.channels) for d in self.height_dilations
        ]
        return state, [cache.context.transpose(0, 1)]

    def scan_step(
        self, cache: RowCache, state: list[Tensor], inputs: list[Tensor], x_i: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """``step`` without mutation: the output row ``(B, R, 1, W)`` from input row
        ``x_i (B, C_in, 1, W)``, the state and the context row; and the next state."""
        k = self.kernel_size - 1
        context = inputs[0].flatten(0, 1)  # (B W, C_c)
        row = self._front_row(x_i)
        gates, registers = [], []
        for layer, (register, d) in enumerate(zip(state, self.height_dilations, strict=True)):
            register = torch.cat([register[:, 1:], row[:, None]], 1)
            registers.append(register)
            window = register[:, ::d]  # rows i - k d, ..., i - d, i
            weight = cache.conv_weights[layer][k]  # the rotation by K: the conv as trained
            gates.append(self._gate_row(cache, layer, window, weight, context))
            if layer < len(state) - 1:
                row = self._residual_row(cache, layer, gates[-1], row)
        return self._skip_row(cache, gates, x_i), registers

    # -- one row, channels-last (B, W, C) ------------------------------------------------------
    def _front_row(self, x_i: Tensor) -> Tensor:
        """The input row ``(B, C_in, 1, W)`` through the 1x1 front conv: ``(B, W, R)``."""
        weight, bias = self.front.weight[:, :, 0, 0], self.front.bias
        return F.linear(x_i[:, :, 0].transpose(1, 2), weight, bias)

    def _gate_row(
        self, cache: RowCache, layer: int, window: Tensor, weight: Tensor, context: Tensor
    ) -> Tensor:
        """Layer ``layer``'s gate output ``(B W, R)`` for one row, from the conv's input rows
        ``window (B, K, W, R)`` and the context row ``(B W, C_c)``; the weights are the
        rewritten ones (``init_cache``), so the gate is one sigmoid and one ``addcmul``. A
        one-column net (width kernel 1) applies its conv as one GEMM of the ``K`` rows."""
        r, bias = self.channels, cache.conv_biases[layer]
        if weight.dim() == 2:  # (K R, 2R): each position's K rows side by side, (B W, K R)
            a = torch.addmm(bias, window.transpose(1, 2).reshape(-1, weight.shape[0]), weight)
        else:
            weight, w, pad = self._width_taps(layer, weight, window.shape[2])
            window = window.permute(0, 3, 1, 2)  # (B, R, K, W)
            a = F.conv2d(window, weight, bias, dilation=(1, w), padding=(0, pad))
            a = a.permute(0, 2, 3, 1).reshape(-1, 2 * r)  # channels-last: a view
        a = a.addmm_(context, cache.context_weights[layer]).sigmoid_()
        return torch.addcmul(a[:, r:], a[:, :r], a[:, r:], value=-2.0)

    def _residual_row(self, cache: RowCache, layer: int, gate: Tensor, row: Tensor) -> Tensor:
        """The next layer's input row ``(B, W, R)``: ``s row + s gate_l (V_l g + b)``."""
        res = F.linear(gate, cache.res_weights[layer], cache.res_biases[layer])
        return res.view(row.shape).add_(row, alpha=self.residual_scale)

    def _skip_row(self, cache: RowCache, gates: list[Tensor], x_i: Tensor) -> Tensor:
        """The output row ``(B, R, 1, W)``: every layer's skip projection, as one GEMM."""
        skips = F.linear(torch.cat(gates, -1), cache.skip_weight, cache.skip_bias)
        return skips.view(x_i.shape[0], x_i.shape[-1], self.channels).transpose(1, 2).unsqueeze(2)
