"""``Task``: what training, evaluation, ``compare`` and the command line ask of a model.

A task wraps a flow with what its data needs: the vocoder (``models.vocoder.Vocoder``) adds a
mel front end and resynthesis, the image flow (``models.image.ImageFlow``) dequantisation and
sampling. Callers use these methods and never ask which kind of model they hold:

- ``forward(batch) -> loss``: the scalar training objective of a training batch;
- ``eval_batch_size`` and ``evaluate_batch(batch) -> {name: (B,)}``: held-out figures per item,
  among them ``metric.name``, the figure that ranks models (test LL up, bits per dim down);
- ``quality(items, temperature, max_items) -> {name: value}``: what the samples are worth;
  ``quality_metrics`` names and orients the figures a table shows (vocoders: resynthesis
  scores; images: none yet);
- ``quality_floor(items, max_items)``: the same figures for a trivial stand-in (white noise of
  each clip's loudness), or ``{}``;
- ``write_samples(out_dir, stem, items, temperature) -> paths``: what a person listens to or
  looks at;
- ``speed(items) -> (rate, unit)``: synthesis or sampling speed;
- ``generation_gemm(size) -> (m, k, n) | None``: the matrix product that generation repeats
  most, on which ``sharedflow.precision`` times bf16 against fp32 (None: its default shape).

``modality`` is a name for messages, never a switch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from sharedflow.core.metrics import Metric

__all__ = ["Task", "median_seconds"]


@runtime_checkable
class Task(Protocol):
    """The protocol of the module docstring (``Vocoder`` and ``ImageFlow`` follow it)."""

    modality: str
    metric: Metric
    quality_metrics: tuple[Metric, ...]
    eval_batch_size: int

    def forward(self, batch: Any) -> Tensor: ...

    def evaluate_batch(self, batch: Any) -> dict[str, Tensor]: ...

    def quality(
        self, items: Any, temperature: float | None = None, max_items: int | None = None
    ) -> dict[str, float]: ...

    def quality_floor(self, items: Any, max_items: int | None = None) -> dict[str, float]: ...

    def write_samples(
        self, out_dir: Path, stem: str, items: Any, temperature: float | None = None
    ) -> list[Path]: ...

    def speed(self, items: Any) -> tuple[float, str]: ...

    def generation_gemm(self, size: int) -> tuple[int, int, int] | None: ...


def median_seconds(run: Callable[[], object], repeats: int = 3) -> float:
    """The median wall time of ``repeats`` calls of ``run`` after one warm-up call (a task's
    ``speed``)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
