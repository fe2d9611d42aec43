"""Reference checkpoints: manifests' keys and shapes convert, load and give finite
log-likelihoods; pickled modules are read without running code; foreign pickles are refused."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from sharedflow.api import load_model
from sharedflow.cli import main
from sharedflow.convert import ConversionError, convert, convert_state, read_state_dict
from sharedflow.sharing import count_parameters

MANIFESTS = Path(__file__).parent / "data" / "manifests"


def _state_from_manifest(name: str) -> dict[str, torch.Tensor]:
    data = json.loads((MANIFESTS / f"{name}.json").read_text())
    shapes = data.get("state_dict", data)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        tensor = 0.02 * torch.randn(shape, generator=generator)
        if key.endswith("weight_g") or key.endswith("norm.weight"):
            tensor = tensor.abs() + 0.5
        if key.startswith("convinv"):
            tensor = torch.linalg.qr(torch.randn(shape[:2], generator=generator))[0][..., None]
        state[key] = tensor
    return state


CASES = {
    "waveglow": ("waveglow", [], 87_879_272),
    "waveglow_old_format": ("waveglow", [], 87_879_272),
    "waveflow-h16-r64": ("waveflow", ["height=16"], 5_950_180),
    "waveflow-h16-r64_L0SG-WaveFlow": ("waveflow-parakeet", [], 5_950_164),
    "nanoflow-naive-h16-r128": ("nanoflow", [], 2_798_408),
    "nanoflow-decomp-h16-r128": ("nanoflow", [], 2_800_228),
    "nanoflow-h16-r128-emb512": ("nanoflow", [], 3_865_188),
    "tarflow_small_bench": ("tarflow", [], 6_532_480),
    "tarflow_small_bench_cond": ("tarflow", [], 6_542_720),
}


@pytest.mark.parametrize("manifest", sorted(CASES))
def test_manifest_state_dicts_convert_load_and_give_finite_likelihoods(
    manifest: str, tmp_path: Path
) -> None:
    kind, overrides, n_params = CASES[manifest]
    source = tmp_path / "reference.pt"
    torch.save({"model": _state_from_manifest(manifest), "iteration": 10}, source)
    assert main(["convert", kind, str(source), str(tmp_path / "out"), *overrides]) == 0
    model, _ = load_model(tmp_path / "out")
    assert count_parameters(model).total == n_params
    with torch.no_grad():
        if model.modality == "audio":
            audio = 0.1 * torch.randn(1, 4096)
            value = model.log_prob(audio)
        else:
            images = torch.randint(0, 256, (2, *model.image_shape), dtype=torch.uint8)
            value = model.evaluate_batch((images, None))["bpd"]
    assert torch.isfinite(value).all()


def test_a_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    state = _state_from_manifest("waveflow-h16-r64")
    state["flows.0.coupling.extra.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="unused.*extra.weight"):
        convert_state("waveflow", state)
    with pytest.raises(ConversionError, match="not a waveglow checkpoint"):
        convert_state("waveglow", _state_from_manifest("waveflow-h16-r64"))


@pytest.fixture
def fake_glow(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in for NVIDIA's glow.py, so a whole-module pickle can be made here."""
    module = types.ModuleType("glow")

    class Invertible1x1Conv(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(c, c, 1, bias=False)
            self.conv.weight.data = torch.linalg.qr(torch.randn(c, c))[0][..., None]

    class WN(nn.Module):
        def __init__(self, n_in: int, n_layers: int = 2, ch: int = 8, mel: int = 16) -> None:
            super().__init__()
            wn = torch.nn.utils.weight_norm
            self.in_layers = nn.ModuleList(
                wn(nn.Conv1d(ch, 2 * ch, 3, dilation=2**i, padding=2**i)) for i in range(n_layers)
            )
            self.res_skip_layers = nn.ModuleList(
                wn(nn.Conv1d(ch, 2 * ch if i < n_layers - 1 else ch, 1)) for i in range(n_layers)
            )
            self.start = wn(nn.Conv1d(n_in, ch, 1))
            self.end = nn.Conv1d(ch, 2 * n_in, 1)
            self.cond_layer = wn(nn.Conv1d(mel, 2 * ch * n_layers, 1))

    class WaveGlow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.upsample = nn.ConvTranspose1d(2, 2, 512, stride=256)
            self.WN = nn.ModuleList(WN(n) for n in (4, 4, 3, 3))
            self.convinv = nn.ModuleList(Invertible1x1Conv(c) for c in (8, 8, 6, 6))

    for cls in (Invertible1x1Conv, WN, WaveGlow):
        cls.__module__, cls.__qualname__ = "glow", cls.__name__
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "glow", module)
    return module


def test_whole_module_pickles_are_read_without_running_their_code(
    fake_glow: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake_glow.WaveGlow()
    path = tmp_path / "waveglow_256channels.pt"
    torch.save({"model": model, "iteration": 5, "learning_rate": 1e-4}, path)
    monkeypatch.delitem(sys.modules, "glow")  # nothing may import it now
    state = read_state_dict(path)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    out = convert("waveglow", path, tmp_path / "converted")
    loaded, config = load_model(out)
    assert config["model"]["n_flows"] == 4 and config["model"]["n_mels"] == 2
    assert torch.isfinite(loaded.log_prob(0.1 * torch.randn(1, 1024))).all()


class _Exploit:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_a_pickle_naming_other_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"model": _Exploit()}, f)
    with pytest.raises(ConversionError, match="refused to unpickle"):
        read_state_dict(path)
    assert "must never run" not in capsys.readouterr().out
