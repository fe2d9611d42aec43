"""The trainer: exact resume, atomic checkpoints, NaN handling, DDP, checkpoint safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

import sharedflow.train.checkpoint as checkpoint_module
from sharedflow.api import load_model
from sharedflow.data.splits import DataSplits
from sharedflow.train import CheckpointError, Trainer, TrainingError
from sharedflow.train.checkpoint import latest_checkpoint, load_weights
from sharedflow.train.optim import Adam, constant
from sharedflow.train.run import train

FAST = [
    "data.segment_length=2048",
    "trainer.batch_size=2",
    "trainer.val_items=1",
    "trainer.progress=false",
    "trainer.sample_every=0",
]


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"ckpt-{step:08d}" / "model.safetensors")


def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = train(
        "audio/nanoflow-tiny",
        [*FAST, f"run_dir={tmp_path / 'a'}", "trainer.max_steps=4", "trainer.ckpt_every=2"],
    )
    part = tmp_path / "b"
    train("audio/nanoflow-tiny", [*FAST, f"run_dir={part}", "trainer.max_steps=2"])
    train(
        "audio/nanoflow-tiny",
        [*FAST, f"run_dir={part}", "trainer.max_steps=4", "trainer.ckpt_every=2"],
    )
    a, b = _weights(whole, 4), _weights(part, 4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_ll" in r] == [0, 2, 4]  # none repeated


def test_a_failed_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    train("audio/waveflow-tiny", [*FAST, f"run_dir={run_dir}", "trainer.max_steps=2"])

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        train("audio/waveflow-tiny", [*FAST, f"run_dir={run_dir}", "trainer.max_steps=4"])
    monkeypatch.undo()
    assert latest_checkpoint(run_dir).name == "ckpt-00000002"
    assert not list(run_dir.glob("*.tmp"))
    load_model(run_dir)  # still loadable


def test_a_killed_write_leaves_a_temporary_that_is_ignored(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train("audio/waveflow-tiny", [*FAST, f"run_dir={run_dir}", "trainer.max_steps=2"])
    stale = run_dir / "ckpt-00000003.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    assert latest_checkpoint(run_dir).name == "ckpt-00000002"
    train("audio/waveflow-tiny", [*FAST, f"run_dir={run_dir}", "trainer.max_steps=3"])
    assert latest_checkpoint(run_dir).name == "ckpt-00000003"


class _Items(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, item: tuple[int, int] | int) -> torch.Tensor:
        index = item[0] if isinstance(item, tuple) else item
        return torch.full((3,), float(index))


class _Flaky(nn.Module):
    """A least-squares model whose loss is NaN on the calls listed in ``bad``."""

    eval_batch_size = 4

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.bad, self.calls = bad, 0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = (batch - self.weight).square().mean()
        return loss * float("nan") if self.calls in self.bad else loss

    def evaluate_batch(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mse": (batch - self.weight).square().mean(1)}

    def write_sample_grid(self, path: Path, temperature: float) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("sample")
        return path


def _fit(model: nn.Module, run_dir: Path, **options: object) -> dict[str, object]:
    data = DataSplits(_Items(), _Items(), "toy")
    trainer = Trainer(batch_size=2, device="cpu", progress=False, **options)
    return trainer.fit(model, data, lambda p: Adam(p, lr=0.1), constant, run_dir, {})


def test_nan_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    model = _Flaky(bad={2, 3})
    last = _fit(model, tmp_path, max_steps=6, max_bad_steps=3, ckpt_every=0)
    assert last["skipped"] == 2 and last["step"] == 6
    assert torch.isfinite(model.weight).all() and model.weight.abs().sum() > 0


def test_too_many_nan_steps_stop_the_run_and_keep_the_last_checkpoint(tmp_path: Path) -> None:
    model = _Flaky(bad=set(range(4, 100)))
    with pytest.raises(TrainingError, match="not finite for 3 steps in a row"):
        _fit(model, tmp_path, max_steps=10, max_bad_steps=3, ckpt_every=2)
    assert latest_checkpoint(tmp_path).name == "ckpt-00000002"


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    run_dir = train("audio/waveflow-tiny", [*FAST, f"run_dir={tmp_path}", "trainer.max_steps=1"])
    other = _Flaky(set())
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_weights(other, latest_checkpoint(run_dir))


def test_checkpoint_state_loads_without_unpickling_code(tmp_path: Path) -> None:
    run_dir = train("audio/waveflow-tiny", [*FAST, f"run_dir={tmp_path}", "trainer.max_steps=1"])
    state = torch.load(latest_checkpoint(run_dir) / "state.pt", weights_only=True)
    assert state["step"] == 1


def test_ddp_with_gloo_and_two_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sharedflow.cli",
        "train",
        "audio/waveflow-tiny",
        *FAST,
        f"run_dir={run_dir}",
        "trainer.max_steps=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert latest_checkpoint(run_dir).name == "ckpt-00000002"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_ll" in r] == [0, 2]  # rank 0 alone writes


def test_a_killed_training_process_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    import signal
    import time

    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "sharedflow.cli",
        "train",
        "audio/waveflow-tiny",
        *FAST,
        f"run_dir={run_dir}",
        "trainer.max_steps=400",
        "trainer.ckpt_every=3",
        "trainer.val_every=0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while latest_checkpoint(run_dir) is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(run_dir)
    assert killed_at is not None, "no checkpoint before the kill"
    resumed = subprocess.run(
        [*command[:-3], "trainer.max_steps=" + str(int(killed_at.name[5:]) + 2)],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert f"resuming from {killed_at}" in resumed.stdout
    assert int(latest_checkpoint(run_dir).name[5:]) == int(killed_at.name[5:]) + 2


def test_bf16_autocast_ema_and_checkpoint_averaging_on_cpu(tmp_path: Path) -> None:
    run_dir = train(
        "audio/nanoflow-tiny",
        [
            *FAST,
            f"run_dir={tmp_path}",
            "trainer.max_steps=4",
            "trainer.ckpt_every=2",
            "trainer.precision=bf16",
            "trainer.ema_decay=0.9",
        ],
    )
    assert (latest_checkpoint(run_dir) / "ema.safetensors").is_file()
    ema, _ = load_model(run_dir, ema=True)
    plain, _ = load_model(run_dir)
    averaged, _ = load_model(run_dir, average=2)
    name = next(n for n, _ in plain.named_parameters() if n.endswith("gate"))
    values = [dict(m.named_parameters())[name] for m in (ema, plain, averaged)]
    assert not torch.equal(values[0], values[1]) and not torch.equal(values[1], values[2])
