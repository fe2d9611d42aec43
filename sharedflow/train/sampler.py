"""Batches as a pure function of the step: exact resume and per-rank shards.

Step ``s`` of rank ``r`` takes positions ``[s B, (s + 1) B)`` of rank ``r``'s stream, the
concatenation of per-epoch shuffles of its shard (``DistributedSampler``'s, ``set_epoch`` per
epoch). Each item also gets a seed for its own randomness (a segment start), derived from
``(seed, rank, step, slot)``. Nothing depends on how many steps ran before, so a run resumed at
step ``s`` reads what an uninterrupted run reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler, Sampler

__all__ = ["StepBatchSampler"]


class _Indexable:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields ``[(index, seed)] * batch_size`` for steps ``start_step, start_step + 1, ...``."""

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        max_steps: int | None = None,
    ) -> None:
        self.shard = DistributedSampler(
            _Indexable(n_items), world_size, rank, shuffle=True, seed=seed, drop_last=False
        )
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        self.start_step, self.max_steps = start_step, max_steps
        self._epoch, self._order = -1, []

    def _position(self, position: int) -> int:
        per_epoch = len(self.shard)
        epoch, offset = divmod(position, per_epoch)
        if epoch != self._epoch:
            self.shard.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.shard)
        return self._order[offset]

    def batch(self, step: int) -> list[tuple[int, int]]:
        start = step * self.batch_size
        return [
            (self._position(start + j), hash((self.seed, self.rank, step, j)) & 0x7FFFFFFF)
            for j in range(self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.max_steps is None or step < self.max_steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        return 0 if self.max_steps is None else max(0, self.max_steps - self.start_step)
