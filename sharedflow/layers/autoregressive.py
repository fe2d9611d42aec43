"""Affine autoregressive transform along one axis (WaveFlow's rows, TarFlow's tokens).

Along axis ``dim`` of length ``L``: ``z_i = x_i exp(s_i) + t_i`` with
``(s_i, t_i) = param(g(x_{<i}, context)_i)`` for a strictly causal conditioner ``g``;
``log|det| = sum(s)``. ``forward`` is one parallel pass; ``inverse`` generates ``x_0, x_1, ...`` in
order, each from the previous ones, through an explicit cache object that the conditioner fills
(``init_cache`` then ``step`` per position), so nothing is recomputed over the prefix. A net
that can also step without mutation (``scan_init``, ``scan_step``) lets the inverse run as one
``torch`` scan over the positions (``AffineAutoregressive.scan``): an exported graph then holds
one loop, not ``L`` copies of the step.

A *causal* net ``f`` (``f(x)_i`` depends on ``x_{<=i}``) becomes strictly causal in one of two
published ways, both wrappers here:

- ``ShiftedInput``: ``g(x) = f([0, x_0, ..., x_{L-2}])`` (NanoFlow's WaveFlow);
- ``ShiftedOutput``: ``g(x) = [0, f(x_0 .. x_{L-2})]`` -- position 0 passes unchanged (TarFlow,
  Parakeet's WaveFlow). A context aligned with the axis is shifted to stay with its position.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from sharedflow.core.bijection import Bijection, Context, sum_except_batch
from sharedflow.layers.affine import AffineParam, ExpAffine

__all__ = [
    "AffineAutoregressive",
    "CausalNet",
    "RecomputeCache",
    "ShiftedInput",
    "ShiftedOutput",
    "replayed_positions",
]


class RecomputeCache:
    """The cache of the generic step: a buffer of the inputs so far, re-run in full each step."""

    def __init__(self, x: Tensor, context: Context, step: Any, dim: int) -> None:
        self.buffer = torch.zeros_like(x)
        self.context = context
        self.step = step
        self.dim = dim


class CausalNet(nn.Module):
    """A network whose output at position ``i`` along ``dim`` depends on inputs ``<= i``.

    Subclasses implement ``forward(x, context=None, step=None)`` (``step``: the NanoFlow step
    input of a shared body, see ``sharedflow.sharing``); fast ones also override ``init_cache``
    and ``step``. The default step writes ``x_i`` into a buffer and re-runs the whole net, which is
    exact (causality makes the zeros after ``i`` irrelevant) and serves as the test reference.
    """

    dim: int = 2
    position_tensor = False  # whether ``step`` also takes ``i`` as a 0-dim tensor, every
    # shape independent of it (then ``AffineAutoregressive.replay`` can use a CUDA graph)

    def init_cache(self, x: Tensor, context: Context, step: Any = None) -> Any:
        """A cache for generating a tensor shaped like ``x`` with this ``context``."""
        return RecomputeCache(x, context, step, self.dim)

    def step(self, cache: Any, x_i: Tensor, i: int) -> Tensor:
        """Output at position ``i`` given input ``x_i`` (size 1 along ``dim``) and the cache."""
        cache.buffer.narrow(cache.dim, i, 1).copy_(x_i)
        return self(cache.buffer, cache.context, cache.step).narrow(cache.dim, i, 1)

    def scan_init(self, cache: Any) -> tuple[list[Tensor], list[Tensor]] | None:
        """The step as a scan: ``(state, inputs)``, the initial carry and the per-position
        inputs stacked along a leading axis, for ``scan_step``; None when the net has no
        such form (its inverse then runs as a loop)."""
        return None

    def scan_step(
        self, cache: Any, state: list[Tensor], inputs: list[Tensor], x_i: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """``step`` without mutation: the output for input ``x_i`` and the next state."""
        raise NotImplementedError(f"{type(self).__name__} has no scan form")


class _Shifted(nn.Module):
    """What the two wrappers share: the net's axis, and its scan form. ``passes_first``: whether
    position 0 passes unchanged (then the net's step ``j`` gives position ``j + 1``)."""

    net: CausalNet
    passes_first: bool

    @property
    def dim(self) -> int:
        return self.net.dim

    @property
    def position_tensor(self) -> bool:
        return getattr(self.net, "position_tensor", False)

    def scan_init(self, cache: Any) -> tuple[list[Tensor], list[Tensor]] | None:
        return self.net.scan_init(cache)

    def scan_step(
        self, cache: Any, state: list[Tensor], inputs: list[Tensor], x_prev: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """The net's output for the position after ``x_prev``, and the next state."""
        return self.net.scan_step(cache, state, inputs, x_prev)


class ShiftedInput(_Shifted):
    """``g(x) = f(shift(x))``: the causal net sees the previous position (zeros at position 0)."""

    passes_first = False

    def __init__(self, net: CausalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Context = None) -> Tensor:
        length = x.shape[self.dim]
        pad = torch.zeros_like(x.narrow(self.dim, 0, 1))
        return self.net(torch.cat([pad, x.narrow(self.dim, 0, length - 1)], self.dim), context)

    def init_cache(self, x: Tensor, context: Context) -> Any:
        return self.net.init_cache(x, context)

    def step(self, cache: Any, x_prev: Tensor | None, i: int | Tensor, like: Tensor) -> Tensor:
        """Output for position ``i`` from ``x_{i-1}`` (``None`` at ``i = 0``, shaped ``like``)."""
        x_in = torch.zeros_like(like) if x_prev is None else x_prev
        return self.net.step(cache, x_in, i)


class ShiftedOutput(_Shifted):
    """``g(x) = [0, f(x_{:-1})]``: position 0 gets zero parameters (the identity for ``exp``).

    Args:
        net: the causal net ``f``.
        context_dim: the axis of a context aligned with the data (WaveFlow's mel rows), shifted so
            that position ``i``'s output still sees context ``i``; ``None`` for unaligned contexts.
    """

    passes_first = True

    def __init__(self, net: CausalNet, context_dim: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.context_dim = context_dim

    def _tail_context(self, context: Context, length: int) -> Context:
        """The context of positions ``1 .. length - 1``, aligned with the outputs."""
        if self.context_dim is None:
            return context
        return context.narrow(self.context_dim, 1, length - 1)

    def forward(self, x: Tensor, context: Context = None) -> Tensor:
        length = x.shape[self.dim]
        h = self.net(x.narrow(self.dim, 0, length - 1), self._tail_context(context, length))
        return torch.cat([torch.zeros_like(h.narrow(self.dim, 0, 1)), h], self.dim)

    def init_cache(self, x: Tensor, context: Context) -> Any:
        length = x.shape[self.dim]
        return self.net.init_cache(
            x.narrow(self.dim, 0, length - 1), self._tail_context(context, length)
        )

    def step(
        self, cache: Any, x_prev: Tensor | None, i: int | Tensor, like: Tensor
    ) -> Tensor | None:
        """Output for position ``i``; ``None`` at ``i = 0`` (zero parameters)."""
        if x_prev is None:
            return None
        return self.net.step(cache, x_prev, i - 1)


class AffineAutoregressive(Bijection):
    """Affine autoregressive transform along ``dim`` (see the module docstring).

    Args:
        conditioner: ``ShiftedInput`` or ``ShiftedOutput`` around a ``CausalNet``; maps
            ``x`` to ``h`` with the parameters of position ``i`` along the same axis.
        param: how ``h`` becomes ``(log_scale, shift)``.
        param_dim: the axis of ``h`` that holds the parameter halves (channels: 1; tokens: -1).
    """

    def __init__(
        self, conditioner: nn.Module, param: AffineParam | None = None, param_dim: int = 1
    ) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.param = param if param is not None else ExpAffine()
        self.param_dim = param_dim

    @property
    def dim(self) -> int:
        return self.conditioner.dim

    def forward(self, x: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        log_scale, shift = self.param(self.conditioner(x, context), self.param_dim)
        return x * torch.exp(log_scale) + shift, sum_except_batch(log_scale)

    scan = False  # run the inverse as one scan where the conditioner allows (export sets it)
    replay = False  # positions 2 .. L-1 replayed from one CUDA graph (``replayed_positions``)

    def inverse(self, z: Tensor, context: Context = None) -> tuple[Tensor, Tensor]:
        cache = self.conditioner.init_cache(z, context)
        plan = self.conditioner.scan_init(cache) if self.scan else None
        if plan is not None:
            return self._inverse_scan(z, cache, *plan)
        if self.replay and self.conditioner.position_tensor and z.shape[self.dim] > 2:
            return self._inverse_replayed(z, cache)
        rows: list[Tensor] = []
        logdet = z.new_zeros(z.shape[0])
        x_prev = None
        for i in range(z.shape[self.dim]):
            z_i = z.narrow(self.dim, i, 1)
            h_i = self.conditioner.step(cache, x_prev, i, z_i)
            if h_i is None:
                x_i = z_i
            else:
                log_scale, shift = self.param(h_i, self.param_dim)
                x_i = (z_i - shift) * torch.exp(-log_scale)
                logdet = logdet - sum_except_batch(log_scale)
            rows.append(x_i)
            x_prev = x_i
        return torch.cat(rows, self.dim), logdet

    def _inverse_replayed(self, z: Tensor, cache: Any) -> tuple[Tensor, Tensor]:
        """``inverse``'s loop with the position a 0-dim tensor that the step itself advances,
        so that one position's work has the same shapes and kernels at every position. On a
        CUDA device, position 1 runs eagerly (it also warms up the kernels), its work is
        captured once as a CUDA graph, and the graph is replayed for positions 2 .. L-1: one
        launch per position instead of one per kernel. Elsewhere every position runs eagerly
        (the same arithmetic, which the tests compare with the plain loop)."""
        d = self.dim
        x = torch.empty_like(z)
        x.narrow(d, 0, 1).copy_(z.narrow(d, 0, 1))
        logdet = z.new_zeros(z.shape[0])
        h = self.conditioner.step(cache, None, 0, z.narrow(d, 0, 1))
        if h is not None:  # position 0 has parameters of its own
            log_scale, shift = self.param(h, self.param_dim)
            x.narrow(d, 0, 1).sub_(shift).mul_(torch.exp(-log_scale))
            logdet.sub_(sum_except_batch(log_scale))
        i = torch.ones((), dtype=torch.long, device=z.device)
        x_prev = x.narrow(d, 0, 1).clone()

        def position() -> None:  # position i, then i + 1
            z_i = z.index_select(d, i.view(1))
            log_scale, shift = self.param(
                self.conditioner.step(cache, x_prev, i, z_i), self.param_dim
            )
            x_i = (z_i - shift) * torch.exp(-log_scale)
            x.index_copy_(d, i.view(1), x_i)
            logdet.sub_(sum_except_batch(log_scale))
            x_prev.copy_(x_i)
            i.add_(1)

        length = z.shape[d]
        if z.device.type != "cuda":
            for _ in range(1, length):
                position()
            return x, logdet
        side = torch.cuda.Stream(z.device)
        side.wait_stream(torch.cuda.current_stream(z.device))
        with torch.cuda.stream(side):
            position()  # position 1, eagerly: library handles and allocator pools
        torch.cuda.current_stream(z.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        dtype = torch.get_autocast_dtype("cuda")
        enabled = torch.is_autocast_enabled("cuda")
        # Autocast's cache of cast weights must not outlive the capture.
        with torch.autocast("cuda", dtype, enabled=enabled, cache_enabled=False):
            with torch.cuda.graph(graph):
                position()
        for _ in range(2, length):
            graph.replay()
        return x, logdet

    def _inverse_scan(
        self, z: Tensor, cache: Any, state: list[Tensor], inputs: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """``inverse``'s loop as one ``torch`` scan over the positions: the carry is the last
        position, the log-determinant and the conditioner's state; the same arithmetic as the
        loop, in the same order."""
        from torch._higher_order_ops import scan

        d = self.dim
        zs = z.movedim(d, 0)  # (L, B, ...): a position, without its axis
        # The carry keeps one layout from step to step: every position contiguous.
        first = (
            zs[0].contiguous() if self.conditioner.passes_first else zs[0].new_zeros(zs[0].shape)
        )

        def combine(carry: list[Tensor], xs: list[Tensor]) -> tuple[list[Tensor], Tensor]:
            x_prev, logdet, *state = carry
            z_i, *inputs = xs
            h, state = self.conditioner.scan_step(cache, state, inputs, x_prev.unsqueeze(d))
            log_scale, shift = self.param(h, self.param_dim)
            x_i = ((z_i.unsqueeze(d) - shift) * torch.exp(-log_scale)).squeeze(d).contiguous()
            return [x_i, logdet - sum_except_batch(log_scale), *state], x_i.clone()

        rest = zs[1:] if self.conditioner.passes_first else zs
        carry = [first, z.new_zeros(z.shape[0]), *state]
        (_, logdet, *_), rows = scan(combine, carry, [rest, *inputs])
        if self.conditioner.passes_first:
            rows = torch.cat([first[None], rows])
        return rows.movedim(0, d), logdet

    @torch.no_grad()
    def inverse_jacobi(
        self,
        z: Tensor,
        context: Context = None,
        tol: float = 1e-4,
        max_iters: int | None = None,
        chunk: int | None = None,
    ) -> tuple[Tensor, Tensor, list[int]]:
        """Parallel inverse by fixed-point iteration (Jacobi; Gauss-Seidel-Jacobi with chunks).

        ``x <- (z - t(x)) exp(-s(x))`` with one parallel pass of the conditioner per iteration:
        position ``i`` is exact after ``i + 1`` iterations, so ``L`` iterations are exact; it
        stops when the largest update is below ``tol``. With ``chunk``, the positions are solved
        a chunk at a time (earlier chunks fixed), each by Jacobi over the prefix up to its end.
        Returns ``(x, logdet, iterations per chunk)``.
        """
        length = z.shape[self.dim]
        size = chunk or length
        x = z.clone()
        counts = []
        for start in range(0, length, size):
            end = min(length, start + size)
            prefix_z = z.narrow(self.dim, 0, end)
            limit = max_iters or (end - start)
            iterations = 0
            while iterations < limit:
                iterations += 1
                prefix = x.narrow(self.dim, 0, end)
                log_scale, shift = self.param(self.conditioner(prefix, context), self.param_dim)
                update = ((prefix_z - shift) * torch.exp(-log_scale)).narrow(
                    self.dim, start, end - start
                )
                delta = (update - x.narrow(self.dim, start, end - start)).abs().max()
                x.narrow(self.dim, start, end - start).copy_(update)
                if delta < tol:
                    break
            counts.append(iterations)
        log_scale, _ = self.param(self.conditioner(x, context), self.param_dim)
        return x, -sum_except_batch(log_scale), counts


@contextmanager
def replayed_positions(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every ``AffineAutoregressive`` of ``module`` whose conditioner steps
    with a position tensor inverts as ``_inverse_replayed`` does: on a CUDA device, from one
    CUDA graph per layer and call, replayed at each position (TarFlow's KV-cache sampling,
    whose many small kernels are otherwise bound by their launches)."""
    layers = [m for m in module.modules() if isinstance(m, AffineAutoregressive)]
    before = [layer.replay for layer in layers]
    for layer in layers:
        layer.replay = True
    try:
        yield module
    finally:
        for layer, replay in zip(layers, before, strict=True):
            layer.replay = replay
