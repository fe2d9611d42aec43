"""The Task protocol: the built-in models follow it, and a new task in a few lines trains and is
compared through the library's own commands, with no library file changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from sharedflow.api import build_model
from sharedflow.core.metrics import Metric
from sharedflow.core.task import Task
from sharedflow.data.splits import DataSplits


@pytest.mark.parametrize("recipe", ["audio/waveflow-tiny", "image/glow-tiny"])
def test_the_built_in_models_are_tasks(recipe: str) -> None:
    assert isinstance(build_model(recipe, device="meta"), Task)


class Points(Dataset):
    """Points ``(2,)`` around (3, -1); training items are addressed by ``(index, seed)``."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, item: tuple[int, int] | int) -> Tensor:
        index = item[0] if isinstance(item, tuple) else item
        noise = torch.randn(2, generator=torch.Generator().manual_seed(index))
        return torch.tensor([3.0, -1.0]) + 0.5 * noise


def points() -> DataSplits:
    return DataSplits(Points(), Points(), "points")


class GaussianFit(nn.Module):
    """A toy task: a diagonal Gaussian fitted by maximum likelihood."""

    modality = "points"
    metric = Metric("nll", "nats per point", False)
    quality_metrics = (Metric("mean_error", "distance to the true mean", False),)
    eval_batch_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.mean, self.log_std = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))

    def nll(self, x: Tensor) -> Tensor:
        z = (x - self.mean) * torch.exp(-self.log_std)
        return (0.5 * z**2 + self.log_std + 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(1)

    def forward(self, batch: Tensor) -> Tensor:
        return self.nll(batch).mean()

    def evaluate_batch(self, batch: Tensor) -> dict[str, Tensor]:
        return {"nll": self.nll(batch)}

    def quality(self, items: Any, temperature: float | None = None, max_items: Any = None) -> dict:
        return {"mean_error": float((self.mean.detach() - torch.tensor([3.0, -1.0])).norm())}

    def quality_floor(self, items: Any, max_items: int | None = None) -> dict[str, float]:
        return {"mean_error": float(torch.tensor([3.0, -1.0]).norm())}  # the origin's error

    def write_samples(self, out_dir: Path, stem: str, items: Any, temperature: Any = None) -> list:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stem}.pt"
        torch.save(self.mean + self.log_std.exp() * torch.randn(16, 2), path)
        return [path]

    def speed(self, items: Any) -> tuple[float, str]:
        return 1.0, "points/s"

    def generation_gemm(self, size: int) -> tuple[int, int, int] | None:
        return None  # no product of its own: the precision probe uses its default shape


def test_a_new_task_trains_and_is_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sharedflow.compare import NOISE, compare
    from sharedflow.recipes import BUILDERS
    from sharedflow.train.run import train

    assert isinstance(GaussianFit(), Task)
    BUILDERS.register("tests.GaussianFit", GaussianFit)
    BUILDERS.register("tests.points", points)
    recipes = tmp_path / "recipes"
    for group, text in {
        "model/gaussian.yaml": "_target_: tests.GaussianFit\n",
        "data/points.yaml": "_target_: tests.points\n",
        "experiment/toy/gaussian.yaml": "# @package _global_\ndefaults:\n"
        "  - override /model: gaussian\n  - override /data: points\nname: gaussian\n",
    }.items():
        (recipes / group).parent.mkdir(parents=True, exist_ok=True)
        (recipes / group).write_text(text)
    monkeypatch.setenv("SHAREDFLOW_RECIPES", str(recipes))
    run = train(
        "toy/gaussian",
        ["trainer.max_steps=2", "trainer.batch_size=4", "trainer.device=cpu",
         "trainer.progress=false", "trainer.sample_every=2", "optim.lr=0.5",
         f"run_dir={tmp_path / 'run'}"],
    )  # fmt: skip
    assert (run / "ckpt-00000002" / "model.safetensors").is_file()
    assert (run / "samples" / "step-00000002.pt").is_file()
    entries = compare([str(run)], tmp_path / "cmp")
    fit, floor = entries
    assert not fit.error and [m.name for m in fit.columns] == ["nll", "mean_error"]
    assert floor.name == NOISE
    scores = next(iter(fit.scores.values()))
    assert scores["mean_error"][0] < next(iter(floor.scores.values()))["mean_error"][0]
    assert "| nll | mean_error |" in (tmp_path / "cmp" / "results.md").read_text()
