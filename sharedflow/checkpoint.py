"""Checkpoints: safetensors weights, trainer state, written atomically.

A checkpoint is a directory ``ckpt-<step>/`` holding ``model.safetensors`` (weights, with the
run's resolved config as metadata), optionally ``ema.safetensors``, and ``state.pt`` (optimizer,
scheduler, scaler, step, RNG state: plain tensors and numbers, read back with
``weights_only=True``). It is written under a temporary name and renamed, so a crash leaves the
previous checkpoint intact and never a half-written one. Shared tensors (NanoFlow) are stored
once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from sharedflow.tensorfile import load_tensors

__all__ = [
    "CheckpointError",
    "average_weights",
    "checkpoint_step",
    "checkpoints",
    "latest_checkpoint",
    "load_weights",
    "read_config",
    "resolve_checkpoint",
    "run_directory",
    "save_checkpoint",
]

MODEL_FILE, EMA_FILE, STATE_FILE = "model.safetensors", "ema.safetensors", "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, or does not match the model."""


_NAME = re.compile(r"ckpt-(\d+)")


def checkpoint_step(path: Path) -> int:
    """The step recorded inside a checkpoint (its weights' metadata)."""
    with _open(path / MODEL_FILE) as f:
        step = (f.metadata() or {}).get("step")
    if step is None or not step.isdigit():
        raise CheckpointError(f"{path}: records no step")
    return int(step)


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints this library wrote in a run (``ckpt-<digits>/`` with weights), ordered
    by the step recorded inside, oldest first. Other folders (``ckpt-best``) are not ours."""
    found = []
    for path in Path(run_dir).glob("ckpt-*"):
        if _NAME.fullmatch(path.name) and (path / MODEL_FILE).is_file():
            try:
                found.append((checkpoint_step(path), path))
            except CheckpointError:
                found.append((int(_NAME.fullmatch(path.name)[1]), path))  # unreadable: by name
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from itself, its ``model.safetensors``, or a run directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{path}: not a sharedflow checkpoint (reference checkpoints are imported with "
                "'sharedflow convert')"
            )
        return path.parent if path.name == MODEL_FILE else path
    if (path / MODEL_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path}: holds no checkpoint")
    return latest


def run_directory(path: str | Path) -> Path:
    """The run directory of a run, of one of its checkpoints, or of a checkpoint's weights."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    return path.parent if (path / MODEL_FILE).is_file() else path


def _weights_file(checkpoint: Path) -> Path:
    return checkpoint if checkpoint.is_file() else checkpoint / MODEL_FILE


def _open(path: Path) -> Any:
    """``safe_open`` with a broken file turned into an error that names it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as error:  # safetensors raises its own error types for broken files
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error


def read_config(checkpoint: str | Path) -> dict[str, Any]:
    """The resolved config stored with the weights, checked as untrusted data.

    It must be a mapping with a ``model`` node, hold no interpolation, and name only
    allowlisted builders (``sharedflow.recipes.BUILDERS``); anything else is refused before
    a single object is built.
    """
    from sharedflow.recipes import bind_targets

    path = _weights_file(Path(checkpoint))
    with _open(path) as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise CheckpointError(f"{checkpoint}: the weights carry no config")
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: its config is not valid JSON ({error})") from error
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path}: its config is not a mapping with a 'model' node")
    bind_targets(config, where=str(path))
    return config


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    config: dict[str, Any],
    ema: nn.Module | None = None,
    keep_last: int = 3,
) -> Path:
    """Write ``ckpt-<step>/`` atomically and keep only the last ``keep_last`` checkpoints."""
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = run_dir / f"ckpt-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    metadata = {"config": json.dumps(config), "step": str(step)}
    try:
        save_model(model, str(tmp / MODEL_FILE), metadata=metadata)
        if ema is not None:
            save_model(ema, str(tmp / EMA_FILE), metadata=metadata)
        torch.save(state, tmp / STATE_FILE)
        for path in [*tmp.iterdir(), tmp]:
            _fsync(path)  # the contents are on disk before the rename makes them visible
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync(run_dir)  # and the rename itself survives a power loss
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_weights(model: nn.Module, checkpoint: str | Path, ema: bool = False) -> nn.Module:
    """Load weights into ``model``, refusing (with the differences named) a mismatch."""
    checkpoint = Path(checkpoint)
    path = checkpoint / EMA_FILE if ema else _weights_file(checkpoint)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with _open(path) as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in stored.keys() & expected.keys() if stored[k] != expected[k])
    if unexpected or wrong:
        details = [f"unexpected keys {unexpected[:5]}"] if unexpected else []
        details += [f"{k}: stored {stored[k]}, model {expected[k]}" for k in wrong[:5]]
        raise CheckpointError(f"{checkpoint} does not match the model: " + "; ".join(details))
    try:
        load_model(model, str(path), strict=True)
    except RuntimeError as error:  # keys the model has and the file lacks
        raise CheckpointError(f"{checkpoint} does not match the model: {error}") from error
    except Exception as error:  # a file whose tensors cannot be read
        raise CheckpointError(f"{path}: cannot load its tensors ({error})") from error
    return model


def load_state(checkpoint: str | Path) -> dict[str, Any]:
    """The trainer state, read without unpickling arbitrary objects."""
    return load_tensors(Path(checkpoint) / STATE_FILE)


@torch.no_grad()
def average_weights(model: nn.Module, paths: list[Path]) -> nn.Module:
    """Load the mean of several checkpoints' weights into ``model`` (NanoFlow's ``-a N``)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total = None
    for path in paths:
        load_weights(model, path)
        state = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
        total = state if total is None else {k: total[k] + state[k] for k in total}
    model.load_state_dict({k: (v / len(paths)) for k, v in total.items()}, strict=True)
    return model
