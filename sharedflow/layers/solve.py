"""Inverting a composed flow with the parallel solver for its autoregressive layers.

``jacobi_inverse(transform, z, context, ...)`` inverts like ``transform.inverse`` but sends every
``AffineAutoregressive`` layer through ``inverse_jacobi`` (Jacobi, or Gauss-Seidel-Jacobi with
``chunk``) and collects the iteration counts, in the order the layers were solved.
"""

from __future__ import annotations

from torch import Tensor

from sharedflow.core.bijection import Bijection, Context, Sequential
from sharedflow.layers.autoregressive import AffineAutoregressive

__all__ = ["jacobi_inverse"]


def jacobi_inverse(
    transform: Bijection,
    z: Tensor,
    context: Context = None,
    tol: float = 1e-4,
    max_iters: int | None = None,
    chunk: int | None = None,
) -> tuple[Tensor, list[list[int]]]:
    """``(x, iterations)``: the inverse at ``z`` and the iteration counts of each AR layer."""
    counts: list[list[int]] = []

    def solve(layer: Bijection, z: Tensor, context: Context) -> Tensor:
        if isinstance(layer, AffineAutoregressive):
            x, _, n = layer.inverse_jacobi(z, context, tol, max_iters, chunk)
            counts.append(n)
            return x
        if isinstance(layer, Sequential):
            contexts = [context]
            for sub in layer.layers[:-1]:
                contexts.append(sub.forward_context(contexts[-1]))
            for sub, ctx in zip(reversed(layer.layers), reversed(contexts), strict=True):
                z = solve(sub, z, ctx)
            return z
        if any(isinstance(m, AffineAutoregressive) for m in layer.modules()):
            raise TypeError(f"jacobi_inverse cannot see inside {type(layer).__name__}")
        return layer.inverse(z, context)[0]

    return solve(transform, z, context), counts
