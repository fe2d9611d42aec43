"""The trainer: exact resume, atomic checkpoints, NaN handling, DDP, checkpoint safety."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

import sharedflow.checkpoint as checkpoint_module
from sharedflow.api import load_model
from sharedflow.checkpoint import latest_checkpoint, load_weights
from sharedflow.data.splits import DataSplits
from sharedflow.train import CheckpointError, Trainer, TrainingError
from sharedflow.train.ema import EMA
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

    def write_samples(self, out_dir: Path, stem: str, items: Dataset, temperature: float) -> list:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{stem}.txt").write_text("sample")
        return [out_dir / f"{stem}.txt"]


def _fit(model: nn.Module, run_dir: Path, **options: object) -> dict[str, object]:
    data = DataSplits(_Items(), _Items(), "toy")
    trainer = Trainer(batch_size=2, device="cpu", progress=False, **options)
    return trainer.fit(model, data, lambda p: Adam(p, lr=0.1), constant, run_dir, {})


def test_nan_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    model = _Flaky(bad={2, 3})
    last = _fit(model, tmp_path, max_steps=6, max_bad_steps=3, ckpt_every=0)
    assert last["skipped"] == 2 and last["step"] == 6
    assert torch.isfinite(model.weight).all() and model.weight.abs().sum() > 0


def test_too_many_nan_steps_stop_the_run_and_keep_the_last_good_weights(tmp_path: Path) -> None:
    model = _Flaky(bad=set(range(4, 100)))  # steps 1-3 are good, then every one is NaN
    with pytest.raises(TrainingError, match="not finite for 3 steps in a row"):
        _fit(model, tmp_path / "bad", max_steps=10, max_bad_steps=3, ckpt_every=2)
    good = _Flaky(bad=set())
    _fit(good, tmp_path / "good", max_steps=3, ckpt_every=0)
    kept = latest_checkpoint(tmp_path / "bad")
    assert kept.name == "ckpt-00000005"  # written when the run stopped, not only at step 2
    assert torch.equal(load_weights(_Flaky(set()), kept).weight, good.weight)


def test_a_non_finite_last_step_still_writes_the_final_checkpoint(tmp_path: Path) -> None:
    last = _fit(_Flaky(bad={4}), tmp_path, max_steps=4, ckpt_every=0)
    assert last["step"] == 4 and last["skipped"] == 1
    assert latest_checkpoint(tmp_path).name == "ckpt-00000004"
    assert json.loads((tmp_path / "finished.json").read_text())["skipped"] == 1


def test_zero_steps_write_an_untrained_checkpoint(tmp_path: Path) -> None:
    _fit(_Flaky(set()), tmp_path, max_steps=0)
    assert latest_checkpoint(tmp_path).name == "ckpt-00000000"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("precision", "fp8", "trainer.precision='fp8': expected one of auto, fp32, bf16, fp16"),
        ("max_steps", -1, "trainer.max_steps=-1: expected a whole number >= 0"),
        ("batch_size", 0, "trainer.batch_size=0"),
        ("grad_clip", "abc", "trainer.grad_clip='abc'"),
        ("ema_decay", 1.5, "trainer.ema_decay=1.5"),
        ("threads", 0, "trainer.threads=0: expected null or >= 1"),
    ],
)
def test_bad_trainer_settings_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Trainer(**{key: value})


def test_a_run_trains_with_its_threads_and_gives_the_others_back(tmp_path: Path) -> None:
    seen = []

    class Counting(_Flaky):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return super().forward(batch)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _fit(Counting(set()), tmp_path, max_steps=2, threads=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_checkpoints_are_ordered_by_their_step_and_foreign_folders_are_kept(
    tmp_path: Path,
) -> None:
    _fit(_Flaky(set()), tmp_path, max_steps=4, ckpt_every=1, keep_last=2)
    shutil.copytree(latest_checkpoint(tmp_path), tmp_path / "ckpt-best")
    shutil.copytree(tmp_path / "ckpt-00000003", tmp_path / "ckpt-zzz")
    assert latest_checkpoint(tmp_path).name == "ckpt-00000004"
    _fit(_Flaky(set()), tmp_path, max_steps=6, ckpt_every=1, keep_last=2)
    names = sorted(p.name for p in tmp_path.glob("ckpt-*"))
    assert names == ["ckpt-00000005", "ckpt-00000006", "ckpt-best", "ckpt-zzz"]


def test_a_second_training_into_the_same_run_directory_is_refused(tmp_path: Path) -> None:
    from sharedflow.train.lock import RunLock, RunLockedError

    with RunLock(tmp_path), pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
        _fit(_Flaky(set()), tmp_path, max_steps=1)
    _fit(_Flaky(set()), tmp_path, max_steps=1)  # free again once the first has ended


def test_resume_skips_a_torn_metrics_line_and_a_corrupt_latest_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = _Flaky(set())
    _fit(whole, tmp_path / "whole", max_steps=6, ckpt_every=2, log_every=1)
    run = tmp_path / "run"
    _fit(_Flaky(set()), run, max_steps=4, ckpt_every=2, log_every=1)
    (run / "ckpt-00000004" / "model.safetensors").write_bytes(b"garbage")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # a write cut short
    resumed = _Flaky(set())
    _fit(resumed, run, max_steps=6, ckpt_every=2, log_every=1)
    out = capsys.readouterr().out
    assert "cannot resume from" in out and "ckpt-00000004" in out and "torn" in out
    assert "resuming from" in out and "ckpt-00000002" in out
    assert torch.equal(resumed.weight, whole.weight)

    def steps(run_dir: Path) -> list[int]:
        return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]

    assert steps(run) == steps(tmp_path / "whole")  # no record lost, none twice


def test_read_metrics_skips_a_torn_line_and_reads_nothing_from_a_run_without_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sharedflow.train.loop import read_metrics

    assert read_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]
    assert "line 3 is torn" in capsys.readouterr().out


def test_a_restart_before_the_first_checkpoint_leaves_no_duplicate_records(
    tmp_path: Path,
) -> None:
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')  # a run killed early
    for run_dir in (run, fresh):
        _fit(_Flaky(set()), run_dir, max_steps=2, log_every=1)
    steps = [
        [json.loads(line)["step"] for line in (d / "metrics.jsonl").open()] for d in (run, fresh)
    ]
    assert steps[0] == steps[1]


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


def test_ema_warms_up_so_the_initial_weights_do_not_linger() -> None:
    model = nn.Linear(3, 2)
    start = model.weight.detach().clone()
    ema = EMA(model, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 0)  # d_0 = 0.1: 90% of the new weights
    assert torch.allclose(ema.model.weight, 0.1 * start + 0.9 * model.weight)
    for t in range(1, 2400):
        ema.update(model, t)
    # a fixed 0.999 would keep 0.999^2400 = 9% of the start (here 0.09 of the shift)
    assert (model.weight - ema.model.weight).abs().max() < 1e-4


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


def test_checkpoint_files_and_folder_are_fsynced_around_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = checkpoint_module._fsync
    monkeypatch.setattr(checkpoint_module, "_fsync", lambda p: synced.append(p.name) or real(p))
    _fit(_Flaky(set()), tmp_path, max_steps=1)
    assert {"model.safetensors", "state.pt", "ckpt-00000001.tmp"} <= set(synced)
    assert synced[-1] == tmp_path.name  # the folder, after the rename


def test_a_run_whose_checkpoints_are_all_unreadable_is_not_restarted_silently(
    tmp_path: Path,
) -> None:
    _fit(_Flaky(set()), tmp_path, max_steps=2, ckpt_every=1, keep_last=2)
    for checkpoint in tmp_path.glob("ckpt-*"):
        (checkpoint / "model.safetensors").write_bytes(b"garbage")
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="none of its 2 checkpoints can be read"):
        _fit(_Flaky(set()), tmp_path, max_steps=4, ckpt_every=1)
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing thrown away
