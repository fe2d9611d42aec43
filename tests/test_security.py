"""Crafted checkpoints and configs build nothing but sharedflow's allowlisted builders.

Each malicious config would, if anything in it ran, create a sentinel file. Every route is tried
through the commands that read a checkpoint: the command fails with one line and exit code 2,
and the sentinel never appears.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sharedflow.cli import main
from sharedflow.recipes import BUILDERS, RecipeError, bind_targets, build, compose

WAVEFLOW = {"_target_": "sharedflow.models.waveflow", "height": 4, "channels": 8}


def _payloads(sentinel: Path) -> dict[str, dict]:
    touch = {"_target_": "sharedflow.recipes.os.system", "_args_": [f"touch {sentinel}"]}
    return {
        # A path through a module's imports reaches os, torch.load, numpy.load, ...
        "traversal": {"model": touch},
        "traversal-torch-load": {
            "model": {"_target_": "sharedflow.checkpoint.torch.load", "f": str(sentinel)}
        },
        "nested": {"model": {**WAVEFLOW, "upsample": touch}},
        "args": {"model": {**WAVEFLOW, "_args_": [touch]}},
        "partial": {"model": {**touch, "_partial_": True}},
        "list": {"model": WAVEFLOW, "data": {"_target_": "sharedflow.data.speech", "x": [touch]}},
        "interpolation": {"model": {**WAVEFLOW, "channels": "${touch_sentinel:}"}},
        "env-interpolation": {"model": {**WAVEFLOW, "channels": "${oc.env:HOME}"}},
        "foreign": {"model": {"_target_": "os.system", "_args_": [f"touch {sentinel}"]}},
    }


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    OmegaConf.register_new_resolver("touch_sentinel", lambda: path.touch() or 8, replace=True)
    yield path
    OmegaConf.clear_resolver("touch_sentinel")


def _checkpoint(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True)
    save_file(
        {"w": torch.zeros(1)}, directory / "model.safetensors", {"config": json.dumps(config)}
    )
    return directory


@pytest.mark.parametrize("route", list(_payloads(Path("x"))))
@pytest.mark.parametrize("command", ["synthesize", "evaluate"])
def test_a_crafted_checkpoint_runs_nothing(
    route: str, command: str, sentinel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path / "ckpt", _payloads(sentinel)[route])
    before = (checkpoint / "model.safetensors").read_bytes()
    extra = ["in.npy", "--out", str(tmp_path / "out")] if command == "synthesize" else []
    assert main([command, str(checkpoint), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "refusing" in err
    assert "weights_only" not in err
    assert not sentinel.exists()
    assert (checkpoint / "model.safetensors").read_bytes() == before


def test_params_overrides_cannot_traverse_imports(sentinel: Path) -> None:
    with pytest.raises(RecipeError, match="refusing"):
        compose("audio/waveflow-tiny", ["model._target_=sharedflow.recipes.os.system"])
    assert main(["params", "audio/waveflow-tiny", "+model._args_=[1]"]) == 2
    assert not sentinel.exists()


def test_targets_are_bound_to_the_allowlisted_objects() -> None:
    from sharedflow.models import waveflow

    bound = bind_targets(
        {"model": {**WAVEFLOW, "_args_": [{"_target_": "sharedflow.data.speech"}]}}
    )
    assert bound["model"]["_target_"] is waveflow
    assert bound["model"]["_args_"][0]["_target_"] is BUILDERS["sharedflow.data.speech"]


def test_a_registered_builder_can_be_built() -> None:
    BUILDERS.register("my_project.linear", torch.nn.Linear)
    layer = build({"_target_": "my_project.linear", "in_features": 2, "out_features": 3})
    assert isinstance(layer, torch.nn.Linear)
    assert "sharedflow.models.waveflow" in BUILDERS  # the built-in ones are still there


def test_pickled_code_in_a_tensor_file_is_refused_without_torch_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("ran",))

    mel = tmp_path / "mel.pt"
    mel.write_bytes(pickle.dumps(Payload()))
    from sharedflow.tensorfile import TensorFileError, load_tensors

    with pytest.raises(TensorFileError, match="refused to unpickle") as error:
        load_tensors(mel)
    assert "weights_only" not in str(error.value)
    assert "ran" not in capsys.readouterr().out
