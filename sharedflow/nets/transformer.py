"""TarFlow's density estimator: a causal Transformer over patch tokens (Zhai et al. 2024).

Tokens ``x (B, T, D)``; ``h = proj_out(blocks(proj_in(x) + pos [+ class_embed[y]]))``, where each
of the K pre-LN layers is ``x += Attn(LN(x)); x += MLP(LN(x))`` (head dim 64, causal mask,
GELU MLP 4x, biases everywhere, LayerNorm in fp32) and ``proj_out`` starts at zero weight. Output
``i`` depends on tokens ``<= i``: a causal net along dim 1 (``ShiftedOutput`` makes it strict).

Labels: ``y (B,)`` adds ``class_embed[y]`` to every token; ``y = None`` or ``y < 0`` (a dropped
label) uses the mean class embedding, the "unconditional" branch of guidance.

Generation feeds one token at a time through a preallocated KV cache (``init_cache``/``step``).
A ``Guidance`` context runs a second, unconditional branch (the mean class embedding, at the
guidance's attention temperature, as TarFlow's ``MetaBlock.reverse``) and returns
``h_c + w (h_c - h_u)`` (optionally ``w`` ramped linearly over tokens). While generating, the two
branches are stacked along the batch, ``(2B, 1, C)`` per token, so one pass serves both.

NanoFlow-TarFlow: one body (the K layers, the class embedding) serves all flow blocks; each
block owns its input and output projections (a stem and a head). With ``embedding_dim > 0``
each block also owns its position embedding (a step parameter) and a block embedding ``e_k``
enters through a linear map added to every token (foldable to a per-block bias); otherwise
(decomposed) the position embedding is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedflow.core.bijection import Context
from sharedflow.layers.autoregressive import CausalNet
from sharedflow.nets.common import class_rows
from sharedflow.nets.packed import PackedLinear, packable, packed_for
from sharedflow.sharing import StepInput

__all__ = ["CausalTransformer", "Guidance", "zero_output"]

HEAD_DIM = 64


@dataclass
class Guidance:
    """Sampling context for classifier-free guidance (``weight = 0``: plain conditional).

    Attributes:
        labels: ``(B,)`` class labels, or None (unconditional model).
        weight: ``w`` in ``h_c + w (h_c - h_u)``.
        attn_temp: attention temperature of the unconditional branch, which always reads the
            mean class embedding (!= 1: TarFlow's guidance for unconditional models).
        annealed: ramp ``w`` over the tokens, ``w (i + 1) / (T - 1)`` at output ``i``, as
            TarFlow's FID evaluation does.
    """

    labels: Tensor | None = None
    weight: float = 0.0
    attn_temp: float = 1.0
    annealed: bool = False

    def mix(self, conditional: Tensor, unconditional: Tensor, index: Tensor | int, n_tokens: int
            ) -> Tensor:  # fmt: skip
        """``h_c + w_i (h_c - h_u)`` at output ``index`` (an int, or a ``(T, 1)`` column of
        positions) of ``n_tokens``; annealed, ``w_i = w (i + 1) / (T - 1)``."""
        weight: Tensor | float = self.weight
        if self.annealed:  # TarFlow: the output for token i + 1 gets (i + 1) / (T - 1)
            if isinstance(index, Tensor):  # positions, in the outputs' precision
                index = index.to(conditional.dtype)
            weight = weight * (index + 1) / max(1, n_tokens - 1)
        return conditional + weight * (conditional - unconditional)


Map = Callable[[Tensor], Tensor]


class StepMaps(NamedTuple):
    """A layer's products in a token step: ``qkv``, the attention's output ``proj``,
    ``mlp_in`` (the MLP's first linear map and its GELU) and ``mlp_out``."""

    qkv: Map
    proj: Map
    mlp_in: Map
    mlp_out: Map


class LayerNorm32(nn.LayerNorm):
    """LayerNorm of half-precision inputs computed in float32 and cast back (as TarFlow)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype not in (torch.float16, torch.bfloat16):
            return super().forward(x)
        weight, bias = self.weight.float(), self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class Attention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = channels // HEAD_DIM
        self.qkv = nn.Linear(channels, 3 * channels)  # rows [q | k | v], heads contiguous
        self.proj = nn.Linear(channels, channels)

    def _split(self, x: Tensor, qkv: Map | None = None) -> tuple[Tensor, Tensor, Tensor]:
        b, t, c = x.shape
        qkv = self.qkv if qkv is None else qkv
        h = qkv(x).reshape(b, t, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        return h[0], h[1], h[2]  # (B, heads, T, 64) each

    def _merge(self, out: Tensor, proj: Map | None = None) -> Tensor:
        b, _, t, _ = out.shape
        proj = self.proj if proj is None else proj
        return proj(out.transpose(1, 2).reshape(b, t, self.heads * HEAD_DIM))

    def forward(self, x: Tensor, attn_temp: float = 1.0) -> Tensor:
        q, k, v = self._split(x)
        scale = HEAD_DIM**-0.5 / attn_temp
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale))

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor], i: int | Tensor,
             attn_temp: Tensor | None, maps: StepMaps, mask: Tensor | None = None
             ) -> Tensor:  # fmt: skip
        """One token ``(B, 1, C)`` at position ``i``, keys and values written into the cache;
        ``attn_temp`` None (1 for every row), or one per row ``(B, 1, 1, 1)``. An int ``i``
        attends to the cache's first ``i + 1`` positions; a 0-dim tensor ``i`` attends to all
        ``T`` of them under ``mask`` (``(1, T)``, true up to ``i``), so that no shape depends on
        ``i`` (a CUDA graph replays the step at every position). ``maps``: the layer's products
        for the step."""
        q, k, v = self._split(x, maps.qkv)
        keys, values = cache
        if isinstance(i, Tensor):
            keys.index_copy_(2, i.view(1), k.to(keys.dtype))
            values.index_copy_(2, i.view(1), v.to(values.dtype))
        else:
            keys[:, :, i : i + 1] = k
            values[:, :, i : i + 1] = v
            keys, values, mask = keys[:, :, : i + 1], values[:, :, : i + 1], None
        return self._attend(q, keys, values, attn_temp, mask, maps.proj)

    def scan_step(self, x: Tensor, cache: tuple[Tensor, Tensor], i: Tensor,
                  attn_temp: Tensor | None, maps: StepMaps, mask: Tensor
                  ) -> tuple[Tensor, tuple[Tensor, Tensor]]:  # fmt: skip
        """``step`` at a tensor position without mutation: the output and the cache with
        position ``i``'s keys and values written, ``(nB, heads, T, 64)`` each."""
        q, k, v = self._split(x, maps.qkv)
        keys, values = (
            old.index_copy(2, i.view(1), new.to(old.dtype))
            for old, new in zip(cache, (k, v), strict=True)
        )
        return self._attend(q, keys, values, attn_temp, mask, maps.proj), (keys, values)

    def _attend(self, q: Tensor, keys: Tensor, values: Tensor, attn_temp: Tensor | None,
                mask: Tensor | None, proj: Map) -> Tensor:  # fmt: skip
        if attn_temp is not None:  # rows of their own temperatures: scale the queries
            q = q / attn_temp
        scale = HEAD_DIM**-0.5
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
        return self._merge(out, proj)


class Layer(nn.Module):
    """Pre-LN Transformer layer: ``x += Attn(LN(x)); x += MLP(LN(x))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(channels)
        self.attn = Attention(channels)
        self.norm2 = LayerNorm32(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        )

    def forward(self, x: Tensor, attn_temp: float = 1.0) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_temp)
        return x + self.mlp(self.norm2(x))

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor], i: int | Tensor,
             attn_temp: Tensor | None, maps: StepMaps, mask: Tensor | None = None
             ) -> Tensor:  # fmt: skip
        x = x + self.attn.step(self.norm1(x), cache, i, attn_temp, maps, mask)
        return x + maps.mlp_out(maps.mlp_in(self.norm2(x)))

    def scan_step(self, x: Tensor, cache: tuple[Tensor, Tensor], i: Tensor,
                  attn_temp: Tensor | None, maps: StepMaps, mask: Tensor
                  ) -> tuple[Tensor, tuple[Tensor, Tensor]]:  # fmt: skip
        """``step`` without mutation (``Attention.scan_step``): the output and the new cache."""
        attended, cache = self.attn.scan_step(self.norm1(x), cache, i, attn_temp, maps, mask)
        x = x + attended
        return x + maps.mlp_out(maps.mlp_in(self.norm2(x))), cache

    def step_maps(self, rows: int, packed: bool) -> StepMaps:
        """The four products of a token step: the modules themselves, or (``packed``) their
        weights packed for oneDNN (``nets.packed``), for ``rows`` rows at a time."""
        fc1, gelu, fc2 = self.mlp
        if not packed:
            return StepMaps(self.attn.qkv, self.attn.proj, nn.Sequential(fc1, gelu), fc2)
        return packed_for(
            self,
            rows,
            lambda: StepMaps(
                PackedLinear(self.attn.qkv, rows),
                PackedLinear(self.attn.proj, rows),
                PackedLinear(fc1, rows, gelu=True),
                PackedLinear(fc2, rows),
            ),
        )


def _position_embedding(n_tokens: int, channels: int) -> nn.Parameter:
    """Learned ``(T, C)`` position embedding, ``N(0, 0.01^2)`` as TarFlow."""
    return nn.Parameter(torch.randn(n_tokens, channels) * 1e-2)


def zero_output(channels: int, n_out: int) -> nn.Linear:
    """TarFlow's ``proj_out``: zero weight, PyTorch's default bias init."""
    proj = nn.Linear(channels, n_out)
    nn.init.zeros_(proj.weight)
    return proj


@dataclass
class KVCache:
    """Preallocated keys and values ``(nB, heads, T, 64)`` for every layer, where ``n`` branches
    (conditional, and unconditional under guidance) are stacked along the batch, so that one
    pass of the layers serves both."""

    layers: list[tuple[Tensor, Tensor]]
    maps: list[StepMaps]  # each layer's products, packed for oneDNN where ``packable``
    context: Tensor  # (nB, 1, C): each row's class term, added to every token
    attn_temp: Tensor | None  # one per row (nB, 1, 1, 1); None: 1 for every row
    n_branches: int
    guidance: Guidance | None
    n_tokens: int
    step: StepInput | None


class CausalTransformer(CausalNet):
    """TarFlow's causal Transformer (see the module docstring).

    Args:
        n_features: D, features per token (C p^2); 0 when a per-block stem ``Linear(D, C)``
            comes first (NanoFlow-TarFlow) and the body starts at ``channels``.
        channels: C (multiple of 64).
        n_tokens: T.
        n_layers: K.
        num_classes: 0 for unconditional.
        n_out: outputs per token (2 D for affine, D for shift only); 0 when a per-block head
            follows.
        embedding_dim: NanoFlow block-embedding size; 0 for none.
    """

    dim = 1
    position_tensor = True  # ``step`` takes ``i`` as a 0-dim tensor too (Attention.step)

    def __init__(
        self,
        n_features: int,
        channels: int,
        n_tokens: int,
        n_layers: int,
        num_classes: int = 0,
        n_out: int = 0,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        if channels % HEAD_DIM:
            raise ValueError(f"channels {channels} is not a multiple of the head dim {HEAD_DIM}")
        self.channels = channels
        self.n_tokens = n_tokens
        self.proj_in = nn.Linear(n_features, channels) if n_features else None
        self.pos_embed = None if embedding_dim else _position_embedding(n_tokens, channels)
        self.class_embed = (
            nn.Parameter(torch.randn(num_classes, 1, channels) * 1e-2) if num_classes else None
        )
        self.layers = nn.ModuleList(Layer(channels) for _ in range(n_layers))
        self.proj_out = zero_output(channels, n_out) if n_out else None
        self.embedding_dim = embedding_dim
        self.embedding = nn.Linear(embedding_dim, channels) if embedding_dim else None

    # -- NanoFlow step conditioning ---------------------------------------------------------------
    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return (self.embedding_dim,)

    def init_embedding(self, weight: Tensor) -> None:
        nn.init.normal_(weight, std=0.02)  # small, like TarFlow's other embeddings

    def make_step_params(self) -> nn.Module:
        """A block's own position embedding."""
        params = nn.Module()
        params.pos_embed = _position_embedding(self.n_tokens, self.channels)
        return params

    def step_bias(self, embedding: Tensor, params: nn.Module) -> Tensor:
        """``(emb,) -> (C,)``, added to every token of the block."""
        return self.embedding(embedding)

    def drop_embedding_path(self) -> None:
        self.embedding = None

    # -- the network ------------------------------------------------------------------------------
    def class_term(self, labels: Tensor | None, batch: int, like: Tensor) -> Tensor:
        """``(B, 1, C)``: the class embedding of each label; the mean for None or ``y < 0``."""
        if self.class_embed is None:
            return like.new_zeros(batch, 1, self.channels)
        return class_rows(self.class_embed, labels, batch).to(like.dtype)

    def _embed(
        self, x: Tensor, class_term: Tensor, step: StepInput | None, start: int | Tensor
    ) -> Tensor:
        """Tokens ``start ..`` into the residual stream: ``proj_in(x) + pos + class [+ e_k]``
        (one token where ``start`` is a 0-dim tensor)."""
        h = x if self.proj_in is None else self.proj_in(x)
        pos = self.pos_embed if step is None else step.params.pos_embed
        if isinstance(start, Tensor):
            pos = pos.index_select(0, start.view(1))
        else:
            pos = pos[start : start + x.shape[1]]
        h = h + pos + class_term
        return h if step is None else h + step.bias

    def forward(self, x: Tensor, context: Context = None, step: StepInput | None = None) -> Tensor:
        """``(B, T, D) -> (B, T, n_out)`` (or ``(B, T, C)`` when a head follows).

        A ``Guidance`` context mixes the conditional and unconditional outputs, as ``step`` does.
        """
        if not isinstance(context, Guidance):
            return self._run(x, context, step, 1.0)
        conditional = self._run(x, context.labels, step, 1.0)
        if context.weight == 0:
            return conditional
        unconditional = self._run(x, None, step, context.attn_temp)
        tokens = torch.arange(x.shape[1], device=x.device).view(-1, 1)
        return context.mix(conditional, unconditional, tokens, x.shape[1])

    def _run(
        self, x: Tensor, labels: Tensor | None, step: StepInput | None, attn_temp: float
    ) -> Tensor:
        h = self._embed(x, self.class_term(labels, x.shape[0], x), step, 0)
        for layer in self.layers:
            h = layer(h, attn_temp)
        return h if self.proj_out is None else self.proj_out(h)

    def init_cache(self, x: Tensor, context: Context, step: StepInput | None = None) -> KVCache:
        guidance = context if isinstance(context, Guidance) else None
        labels = guidance.labels if guidance else context
        b, t = x.shape[0], x.shape[1]
        like = x.new_zeros(1, 1, self.channels)
        contexts, temps = [self.class_term(labels, b, like)], [1.0]
        if guidance is not None and guidance.weight != 0:
            contexts.append(self.class_term(None, b, like))
            temps.append(guidance.attn_temp)
        rows = b * len(contexts)
        attn_temp = None  # no tensor in the step for the common case, every row at 1
        if len(set(temps)) > 1:
            attn_temp = torch.tensor(temps, dtype=x.dtype, device=x.device)
            attn_temp = attn_temp.repeat_interleave(b).view(rows, 1, 1, 1)
        shape = (rows, self.channels // HEAD_DIM, t, HEAD_DIM)
        layers = [(x.new_zeros(shape), x.new_zeros(shape)) for _ in self.layers]
        packed = packable(x) and all(p.dtype == torch.float32 for p in self.layers.parameters())
        maps = [layer.step_maps(rows, packed) for layer in self.layers]
        context = torch.cat(contexts)
        return KVCache(layers, maps, context, attn_temp, len(contexts), guidance, t, step)

    def step(self, cache: KVCache, x_i: Tensor, i: int | Tensor) -> Tensor:
        h, mask = self._step_in(cache, x_i, i)
        for layer, kv, maps in zip(self.layers, cache.layers, cache.maps, strict=True):
            h = layer.step(h, kv, i, cache.attn_temp, maps, mask)
        return self._step_out(cache, h, i)

    def scan_init(self, cache: KVCache) -> tuple[list[Tensor], list[Tensor]]:
        """The token loop as a scan (how ``AffineAutoregressive`` exports it): ``(state,
        inputs)``. The state is every layer's keys and values, ``(nB, heads, T, 64)`` each,
        zeros at first; the per-position input is the position itself, ``(T,)``."""
        state = [tensor for kv in cache.layers for tensor in kv]
        return state, [torch.arange(cache.n_tokens, device=cache.context.device)]

    def scan_step(
        self, cache: KVCache, state: list[Tensor], inputs: list[Tensor], x_i: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """``step`` at the position ``inputs[0]`` without mutation: the output ``(B, 1, n_out)``
        from the token ``x_i (B, 1, D)``, and the keys and values with that position's
        written."""
        i = inputs[0]
        h, mask = self._step_in(cache, x_i, i)
        written: list[Tensor] = []
        pairs = zip(state[::2], state[1::2], strict=True)
        for layer, kv, maps in zip(self.layers, pairs, cache.maps, strict=True):
            h, kv = layer.scan_step(h, kv, i, cache.attn_temp, maps, mask)
            written += kv
        return self._step_out(cache, h, i), written

    def _step_in(
        self, cache: KVCache, x_i: Tensor, i: int | Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """The token ``(B, 1, D)`` into the residual stream of every branch, and the mask of a
        tensor position, which attends to the whole cache: positions ``<= i``."""
        x = x_i if cache.n_branches == 1 else x_i.repeat(cache.n_branches, 1, 1)
        h = self._embed(x, cache.context, cache.step, i)
        if not isinstance(i, Tensor):
            return h, None
        return h, (torch.arange(cache.n_tokens, device=h.device) <= i)[None]

    def _step_out(self, cache: KVCache, h: Tensor, i: int | Tensor) -> Tensor:
        """The residual stream out: ``proj_out``, and the branches mixed under guidance."""
        h = h if self.proj_out is None else self.proj_out(h)
        if cache.n_branches == 1:
            return h
        conditional, unconditional = h.chunk(2)
        return cache.guidance.mix(conditional, unconditional, i, cache.n_tokens)
