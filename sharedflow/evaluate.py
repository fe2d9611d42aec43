"""Held-out evaluation: the model's per-item metrics, averaged over items.

Audio: the test-set LL of the NanoFlow reference (nats per sample of whole clips, averaged
over clips unweighted). Images: bits per dim. The model says which through ``evaluate_batch``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, device: torch.device | str, max_items: int | None = None
) -> dict[str, float]:
    """Mean of ``model.evaluate_batch`` over (the first ``max_items`` of) ``dataset``."""
    if len(dataset) == 0:
        raise ValueError("the held-out set is empty")
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=model.eval_batch_size, shuffle=False)
    totals: dict[str, float] = {}
    count = 0
    n_batches = None if max_items is None else -(-max_items // model.eval_batch_size)
    for batch in itertools.islice(loader, n_batches):
        batch = [b.to(device) for b in batch] if isinstance(batch, list) else batch.to(device)
        for name, values in model.evaluate_batch(batch).items():
            totals[name] = totals.get(name, 0.0) + values.double().sum().item()
        count += len(values)
    model.train(was_training)
    return {name: total / count for name, total in totals.items()}
