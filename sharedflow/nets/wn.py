"""WaveGlow's density estimator: a non-causal dilated 1-D WaveNet (Prenger et al. 2019).

Input ``h (B, C, T')`` (after the per-flow ``start`` projection, a stem), context
``c (B, C_c, T')`` (the mel folded like the audio). One fused 1x1 conv computes every layer's
conditioning; layer ``l`` (dilation ``2^l``, "same" padding):

    a_l = conv_k(h) + [M c]_l [+ b_l]                (2C channels; b_l: NanoFlow step bias)
    g_l = tanh(a_l[:C]) sigmoid(a_l[C:]);  [res_l, skip_l] = V_l g_l   (last layer: skip only)
    h <- h + gate_l res_l

and the output is ``sum_l skip_l``, ``(B, C, T')``; WaveGlow's zero-initialised ``end`` conv is
the head. NanoFlow (``embedding_dim > 0``): a weight-normed 1x1 conv per layer maps the step
embedding to ``b_l``, and each step owns gates ``(n_layers - 1, C)`` (init 1).
"""

from __future__ import annotations

from torch import Tensor, nn

from sharedflow.core.bijection import Context
from sharedflow.nets.common import GateEmbedding, wn
from sharedflow.sharing import StepInput

__all__ = ["WN", "wn_end", "wn_start"]


def wn_start(in_channels: int, channels: int = 256) -> nn.Module:
    """WaveGlow's input projection (a stem): weight-normed 1x1 conv ``n_half -> C``."""
    return wn(nn.Conv1d(in_channels, channels, 1))


def wn_end(channels: int, out_channels: int) -> nn.Module:
    """WaveGlow's output projection (a head): 1x1 conv ``C -> 2 n_half``, zero-initialised."""
    end = nn.Conv1d(channels, out_channels, 1)
    nn.init.zeros_(end.weight)
    nn.init.zeros_(end.bias)
    return end


class WN(GateEmbedding, nn.Module):
    """WaveGlow's WN body (see the module docstring).

    Args:
        context_channels: channels of the folded mel (80 x n_group = 640).
        channels: C (256).
        n_layers: gated layers (8).
        kernel_size: odd kernel along time (3).
        embedding_dim: NanoFlow step-embedding size; 0 for none.
    """

    def __init__(
        self,
        context_channels: int = 640,
        channels: int = 256,
        n_layers: int = 8,
        kernel_size: int = 3,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList(
            wn(
                nn.Conv1d(
                    channels,
                    2 * channels,
                    kernel_size,
                    dilation=2**i,
                    padding=2**i * (kernel_size - 1) // 2,
                )
            )
            for i in range(n_layers)
        )
        self.cond_layer = wn(nn.Conv1d(context_channels, 2 * channels * n_layers, 1))
        self.res_skip_layers = nn.ModuleList(
            wn(nn.Conv1d(channels, 2 * channels if i < n_layers - 1 else channels, 1))
            for i in range(n_layers)
        )
        self.init_gate_embedding(embedding_dim, n_layers, n_layers - 1)  # last layer: no residual

    # -- the network ------------------------------------------------------------------------------
    def forward(self, h: Tensor, context: Context = None, step: StepInput | None = None) -> Tensor:
        """``(B, C, T'), (B, C_c, T') -> (B, C, T')``."""
        conds = self.cond_layer(context).chunk(self.n_layers, dim=1)
        skips = 0
        for i, (layer, cond) in enumerate(zip(self.in_layers, conds, strict=True)):
            out = self.res_skip_layers[i](self.gate(layer(h) + cond, i, step))
            if i < self.n_layers - 1:
                res, skip = out.chunk(2, dim=1)
                h = h + self.gate_residual(res, i, step)
            else:
                skip = out
            skips = skips + skip
        return skips
