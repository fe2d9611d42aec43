"""The training loop: one straight line from batch to checkpoint.

Per step: a batch (a pure function of the step), the loss under autocast, a skipped step if the
loss or the gradient norm is not finite (too many in a row stop the run and keep the last good
checkpoint), gradient clipping, the optimiser and schedule, the EMA. Periodically: metrics to
``metrics.jsonl`` (and TensorBoard when installed), held-out validation, samples and an atomic
checkpoint. A run started again in the same directory resumes from its last checkpoint and
continues exactly as if it had not stopped. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and only rank 0 logs and writes.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sharedflow.checkpoint import (
    CheckpointError,
    checkpoint_step,
    checkpoints,
    latest_checkpoint,
)
from sharedflow.core.datainit import InitialisedFromData
from sharedflow.data.splits import DataSplits
from sharedflow.evaluate import evaluate
from sharedflow.precision import PRECISIONS, Capabilities, choose
from sharedflow.tensorfile import TensorFileError
from sharedflow.threads import intra_op_threads
from sharedflow.train.distributed import Distributed, pick_device
from sharedflow.train.ema import EMA
from sharedflow.train.lock import RunLock
from sharedflow.train.sampler import StepBatchSampler
from sharedflow.train.state import TrainState

__all__ = ["Trainer", "TrainingError", "read_metrics"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed NaN); the last good checkpoint is kept."""


@dataclass
class Trainer:
    """How to train; every field is a recipe key under ``trainer``.

    Args:
        max_steps: optimiser steps in all (a resumed run stops there too).
        batch_size: per process.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast (fp16 with gradient scaling), or
            ``auto``: bf16 where the device has it natively, else fp32.
        grad_clip: max gradient norm, or None.
        ema_decay: keep an EMA of the weights (used for validation and samples), or None.
        log_every / val_every / sample_every / ckpt_every: periods in steps (0: never; a
            checkpoint, a validation and samples are always made at the end).
        val_items: held-out items per validation (None: all).
        keep_last: checkpoints to keep.
        max_bad_steps: consecutive non-finite steps before the run stops.
        num_workers: data-loading worker processes.
        device: ``auto``, ``cpu`` or ``cuda``.
        paper_scale: warn when such a recipe runs on a CPU.
        sample_temperature: temperature of the periodic samples (None: the model's own).
        progress: show a progress bar.
        max_seconds: a training-time budget; the run ends (validated, checkpointed) once its
            training time passes it. A resumed run counts the time already spent.
        threads: intra-op CPU threads for the run (None: torch's default, the machine's
            cores). The order of a float sum, and so the trained weights to the last bit,
            depends on it: a run given a number trains alike on any machine with the same
            kernels, and resumes alike.
    """

    max_steps: int = 1000
    batch_size: int = 8
    precision: Precision = "fp32"
    grad_clip: float | None = None
    ema_decay: float | None = None
    log_every: int = 10
    val_every: int = 0
    sample_every: int = 0
    ckpt_every: int = 500
    val_items: int | None = None
    keep_last: int = 3
    max_bad_steps: int = 10
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0
    paper_scale: bool = False
    sample_temperature: float | None = None
    progress: bool = True
    max_seconds: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        """Refuse, naming the key, values that would be silently replaced or misread."""
        if self.precision not in PRECISIONS:  # auto: bf16 where native (sharedflow.precision)
            raise ValueError(
                f"trainer.precision={self.precision!r}: expected one of {', '.join(PRECISIONS)}"
            )
        whole = {"max_steps": 0, "batch_size": 1, "log_every": 0, "val_every": 0,
                 "sample_every": 0, "ckpt_every": 0, "keep_last": 1, "max_bad_steps": 1,
                 "num_workers": 0}  # fmt: skip
        for key, least in whole.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"trainer.{key}={value!r}: expected a whole number >= {least}")
        if self.val_items is not None and (
            not isinstance(self.val_items, int) or self.val_items < 1
        ):
            raise ValueError(f"trainer.val_items={self.val_items!r}: expected null or >= 1")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"trainer.threads={self.threads!r}: expected null or >= 1")
        positive = {"grad_clip": self.grad_clip, "max_seconds": self.max_seconds}
        for key, value in positive.items():
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"trainer.{key}={value!r}: expected null or a number > 0")
        if self.ema_decay is not None and not (
            isinstance(self.ema_decay, int | float) and 0 < self.ema_decay < 1
        ):
            raise ValueError(f"trainer.ema_decay={self.ema_decay!r}: expected null or in (0, 1)")

    def fit(
        self,
        model: nn.Module,
        data: DataSplits,
        make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        make_schedule: Callable[[torch.optim.Optimizer], Any],
        run_dir: str | Path,
        config: dict[str, Any],
    ) -> dict[str, Any]:
        """Train ``model`` (whose ``forward(batch)`` is its loss) and return the last metrics."""
        run = Distributed.from_env()
        device = pick_device(self.device, run)
        run.init(device)
        if self.paper_scale and device.type == "cpu" and run.is_main:
            warnings.warn(
                "a paper-scale recipe is running on the CPU; expect it to be slow", stacklevel=2
            )
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with intra_op_threads(self.threads), RunLock(run_dir) if run.is_main else nullcontext():
            return self._fit(
                model, data, make_optimizer, make_schedule, run_dir, config, run, device
            )

    def _fit(
        self,
        model: nn.Module,
        data: DataSplits,
        make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        make_schedule: Callable[[torch.optim.Optimizer], Any],
        run_dir: Path,
        config: dict[str, Any],
        run: Distributed,
        device: torch.device,
    ) -> dict[str, Any]:
        model.to(device)
        measure = self.precision in ("auto", "bf16")  # fp32 or fp16 asks no probe
        precision, warning = choose(self.precision, Capabilities.detect(device, measure))
        if warning and run.is_main:
            warnings.warn(f"trainer.precision={self.precision}: {warning}", stacklevel=2)
        optimizer = _build("optim", make_optimizer, model.parameters())
        state = TrainState(
            model,
            optimizer,
            _build("schedule", make_schedule, optimizer),
            torch.amp.GradScaler(
                device.type, enabled=precision == "fp16" and device.type == "cuda"
            ),
            EMA(model, self.ema_decay) if self.ema_decay else None,
        )
        latest = self._resume_latest(run_dir, state, device, run)
        if run.is_main:  # records past the resumed step (or all, starting afresh) were lost work
            _truncate_metrics(run_dir / "metrics.jsonl", state.step if latest else -1)
        sampler = StepBatchSampler(
            len(data.train),
            self.batch_size,
            self.seed,
            run.rank,
            run.world_size,
            state.step,
            self.max_steps,
        )
        loader = DataLoader(data.train, batch_sampler=sampler, num_workers=self.num_workers)
        if latest is None:
            self._initialise(model, data, sampler, device)
        trained = DistributedDataParallel(model) if run.enabled else model
        logger = _Logger(run_dir, enabled=run.is_main)
        autocast = self._autocast(device, precision)
        bad = skipped = 0
        last: dict[str, Any] = {}
        if state.step == 0 and self.val_every:
            self._validate(state.averaged, data, device, run, logger, 0)
        bar = tqdm(
            total=self.max_steps,
            initial=state.step,
            disable=not (self.progress and run.is_main),
            dynamic_ncols=True,
            desc=run_dir.name,
        )
        tick = time.perf_counter()
        for batch in loader:
            record = self._step(state, trained, _to(batch, device), autocast, run)
            if record is None:  # a non-finite loss or gradient: the step was skipped
                bad, skipped = bad + 1, skipped + 1
                if bad >= self.max_bad_steps:
                    bar.close()
                    self._stop(state, run_dir, config, run, bad)
                state.step += 1
                last = {**last, "step": state.step, "skipped": skipped}
            else:
                bad = 0
                state.step += 1
                now = time.perf_counter()
                state.clock, tick = state.clock + now - tick, now
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                last = {"step": state.step, **record, "skipped": skipped,
                        "train_seconds": state.clock}  # fmt: skip
            bar.update(1)
            if self.log_every and state.step % self.log_every == 0:
                logger.log(last)
            final = state.step == self.max_steps or bool(
                self.max_seconds and state.clock >= self.max_seconds
            )
            if self._periodic(state, data, run_dir, config, run, logger, last, final):
                tick = time.perf_counter()  # periodic work is not training time
            if final:
                break
        bar.close()
        if latest_checkpoint(run_dir) is None or state.step > self._saved_step(run_dir):
            # max_steps=0 (an untrained baseline), or a run whose last steps were all skipped:
            # the weights are the last good ones, and they are kept.
            if state.step == 0 and self.val_every == 0:
                last.update(self._validate(state.averaged, data, device, run, logger, 0))
            self._checkpoint(state, run_dir, config, run)
            last = {**last, "step": state.step, "skipped": skipped}
        if run.is_main and last:  # a run resumed after its end trained nothing: keep the record
            (run_dir / "finished.json").write_text(json.dumps(last))
        run.barrier()
        logger.close()
        return last

    def _step(
        self, state: TrainState, trained: nn.Module, batch: Any, autocast: Any, run: Distributed
    ) -> dict[str, float] | None:
        """One optimiser step on ``batch``: the loss, its gradient clipped to ``grad_clip``, the
        optimiser, schedule and EMA. ``None`` (and no update) when the loss or the gradient
        norm is not finite on any rank."""
        model, optimizer, scaler = state.model, state.optimizer, state.scaler
        model.train()
        with autocast:
            loss = trained(batch)
        finite = run.all_finite(loss)
        if finite:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            max_norm = self.grad_clip if self.grad_clip else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            finite = scaler.is_enabled() or run.all_finite(grad_norm)  # fp16: the scaler skips
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            return None
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.schedule.step()
        if state.ema is not None:
            state.ema.update(model, state.step)
        return {
            "loss": loss.item(),  # one device sync per step
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": float(grad_norm),
        }

    def _periodic(
        self,
        state: TrainState,
        data: DataSplits,
        run_dir: Path,
        config: dict[str, Any],
        run: Distributed,
        logger: _Logger,
        last: dict[str, Any],
        final: bool,
    ) -> bool:
        """Validation (into ``last``), samples and a checkpoint when their period comes round,
        and all three at the end; whether any ran."""
        due = [final or (every > 0 and state.step % every == 0)
               for every in (self.val_every, self.sample_every, self.ckpt_every)]  # fmt: skip
        device = next(state.model.parameters()).device
        if due[0]:
            last.update(self._validate(state.averaged, data, device, run, logger, state.step))
        if due[1]:
            self._samples(state.averaged, data, run_dir, state.step, run)
        if due[2]:
            self._checkpoint(state, run_dir, config, run)
        return any(due)

    def _stop(
        self, state: TrainState, run_dir: Path, config: dict[str, Any], run: Distributed, bad: int
    ) -> NoReturn:
        """Too many non-finite steps in a row: keep the weights (skipped steps left them good)
        and stop."""
        if state.step > self._saved_step(run_dir):
            self._checkpoint(state, run_dir, config, run)
        raise TrainingError(
            f"the loss or its gradient was not finite for {bad} steps in a row "
            f"(step {state.step}); the last good weights are in {latest_checkpoint(run_dir)}"
        )

    @staticmethod
    def _saved_step(run_dir: Path) -> int:
        latest = latest_checkpoint(run_dir)
        return -1 if latest is None else checkpoint_step(latest)

    # -- pieces of the loop --------------------------------------------------------------------
    def _autocast(self, device: torch.device, precision: str) -> Any:
        if precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    @torch.no_grad()
    def _initialise(self, model: nn.Module, data: DataSplits, sampler: Any, device: Any) -> None:
        """Data-dependent initialisation (``core.datainit``) on the first batch, before DDP
        broadcasts rank 0's weights."""
        if any(isinstance(m, InitialisedFromData) for m in model.modules()):
            batch = _to(
                torch.utils.data.default_collate([data.train[item] for item in sampler.batch(0)]),
                device,
            )
            model.train()
            model(batch)

    def _validate(
        self,
        model: nn.Module,
        data: DataSplits,
        device: Any,
        run: Distributed,
        logger: Any,
        step: int,
    ) -> dict[str, float]:
        if not run.is_main:
            return {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            result = evaluate(model, data.val, device, self.val_items)
        logger.log({"step": step, **{f"val_{k}": v for k, v in result.items()}})
        summary = ", ".join(f"{k} {v:.4f}" for k, v in result.items())
        tqdm.write(f"step {step}: held-out {summary}")
        return {f"val_{k}": v for k, v in result.items()}

    def _samples(
        self, model: nn.Module, data: DataSplits, run_dir: Path, step: int, run: Distributed
    ) -> None:
        if run.is_main:
            device = next(model.parameters()).device
            with (
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                torch.manual_seed(self.seed)
                was_training = model.training
                model.eval()
                try:
                    model.write_samples(
                        run_dir / "samples", f"step-{step:08d}", data.val, self.sample_temperature
                    )
                finally:
                    model.train(was_training)
            for warning in caught:  # e.g. clipping in an early sample: one line, no source
                tqdm.write(f"note: {warning.message}")

    def _checkpoint(
        self, state: TrainState, run_dir: Path, config: dict[str, Any], run: Distributed
    ) -> None:
        if run.is_main:
            state.save(run_dir, config, self.keep_last)
        run.barrier()

    def _resume_latest(
        self, run_dir: Path, state: TrainState, device: torch.device, run: Distributed
    ) -> Path | None:
        """Resume ``state`` from the newest readable checkpoint, saying which were skipped;
        None (and step 0) when the run has none. A run whose checkpoints are all unreadable is
        an error: restarting from scratch over them would silently throw its work away."""
        found = checkpoints(run_dir)
        for candidate in reversed(found):  # newest first
            try:
                state.load(candidate, device)
            except (CheckpointError, TensorFileError, KeyError) as error:
                if run.is_main:
                    print(f"cannot resume from {candidate} ({error}); trying the one before")
                continue
            if run.is_main:
                print(f"resuming from {candidate} at step {state.step}")
            return candidate
        if found:
            raise TrainingError(
                f"{run_dir}: none of its {len(found)} checkpoints can be read; move them away "
                "to start afresh"
            )
        return None


class _Logger:
    """Appends JSON lines to ``metrics.jsonl`` and mirrors them to TensorBoard if installed."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                pass

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of each whole record in a ``metrics.jsonl``; a torn line (an
    interrupted write) is reported and skipped."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            print(f"{path}: line {number} is torn (an interrupted write); skipping it")
            continue
        if isinstance(record, dict):
            records.append((line, record))
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records a run logged (``metrics.jsonl``), in order; none when it logged nothing."""
    path = Path(run_dir) / "metrics.jsonl"
    return [record for _, record in _records(path)] if path.is_file() else []


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records of steps after the checkpoint a run resumes from (work that was lost)."""
    if not path.is_file():
        return
    kept = [line for line, record in _records(path) if record.get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _build(key: str, make: Callable[[Any], Any], argument: Any) -> Any:
    """``make(argument)``, with a refused setting reported under its recipe key."""
    try:
        return make(argument)
    except (TypeError, ValueError) as error:
        name = getattr(getattr(make, "func", make), "__name__", "?")
        given = ", ".join(f"{k}={v!r}" for k, v in getattr(make, "keywords", {}).items())
        raise ValueError(f"{key}: cannot build {name}({given}): {error}") from error


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(_to(b, device) for b in batch)
    return batch
