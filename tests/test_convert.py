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


def _glow_old_state(widths: list[int], n_mels: int, ch: int, n_layers: int) -> dict:
    """A random state dict in ``glow_old.py``'s layout: per-layer cond, res and skip convs."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return 0.3 * torch.randn(shape, generator=generator, dtype=torch.float64)

    def weight_normed(prefix: str, c_out: int, c_in: int, k: int = 1) -> dict:
        g = randn(c_out, 1, 1).abs() + 0.5
        return {f"{prefix}.weight_v": randn(c_out, c_in, k), f"{prefix}.weight_g": g,
                f"{prefix}.bias": randn(c_out)}  # fmt: skip

    state = {"upsample.weight": randn(n_mels, n_mels, 1024), "upsample.bias": randn(n_mels)}
    for k, width in enumerate(widths):
        half = width // 2
        q = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
        state[f"convinv.{k}.conv.weight"] = q[0][..., None]
        state |= weight_normed(f"WN.{k}.start", ch, half)
        state |= {
            f"WN.{k}.end.weight": randn(2 * half, ch, 1),
            f"WN.{k}.end.bias": randn(2 * half),
        }
        for i in range(n_layers):
            state |= weight_normed(f"WN.{k}.in_layers.{i}", 2 * ch, ch, 3)
            state |= weight_normed(f"WN.{k}.cond_layers.{i}", 2 * ch, 8 * n_mels)
            state |= weight_normed(f"WN.{k}.skip_layers.{i}", ch, ch)
            if i < n_layers - 1:
                state |= weight_normed(f"WN.{k}.res_layers.{i}", ch, ch)
    return state


def _glow_old_infer(
    state: dict, mel: torch.Tensor, z: torch.Tensor, n_layers: int
) -> torch.Tensor:
    """``glow_old.py``'s ``WaveGlow.infer`` spelled out on a state dict, with the noise ``z``
    ``(B, 8, T / 8)`` given: early pieces of 2 channels every 4 flows, then the final ones."""
    import torch.nn.functional as F

    def conv(prefix: str, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        v, g = state[f"{prefix}.weight_v"], state[f"{prefix}.weight_g"]
        weight = g * v / v.norm(dim=(1, 2), keepdim=True)
        padding = dilation * (v.shape[-1] - 1) // 2
        return F.conv1d(x, weight, state[f"{prefix}.bias"], dilation=dilation, padding=padding)

    def wn(k: int, audio: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        h, output = conv(f"WN.{k}.start", audio), 0
        for i in range(n_layers):
            a = conv(f"WN.{k}.in_layers.{i}", h, 2**i) + conv(f"WN.{k}.cond_layers.{i}", spect)
            t, s = a.chunk(2, 1)
            acts = torch.tanh(t) * torch.sigmoid(s)
            if i < n_layers - 1:
                h = h + conv(f"WN.{k}.res_layers.{i}", acts)
            output = output + conv(f"WN.{k}.skip_layers.{i}", acts)
        return F.conv1d(output, state[f"WN.{k}.end.weight"], state[f"WN.{k}.end.bias"])

    spect = F.conv_transpose1d(mel, state["upsample.weight"], state["upsample.bias"], stride=256)
    spect = spect[:, :, : -(1024 - 256)]
    spect = spect.unfold(2, 8, 8).permute(0, 2, 1, 3)
    spect = spect.reshape(spect.size(0), spect.size(1), -1).permute(0, 2, 1)
    n_flows = len([key for key in state if key.startswith("convinv.")])
    n_early = (n_flows - 1) // 4
    audio = z[:, 2 * n_early :]
    for k in reversed(range(n_flows)):
        n_half = audio.size(1) // 2
        if k % 2 == 0:
            audio_0, audio_1 = audio[:, :n_half], audio[:, n_half:]
        else:
            audio_1, audio_0 = audio[:, :n_half], audio[:, n_half:]
        output = wn(k, audio_0, spect)
        s, b = output[:, n_half:], output[:, :n_half]
        audio_1 = (audio_1 - b) / torch.exp(s)
        audio = torch.cat([audio_0, audio_1] if k % 2 == 0 else [audio_1, audio_0], 1)
        audio = F.conv1d(audio, state[f"convinv.{k}.conv.weight"][..., 0].inverse()[..., None])
        if k % 4 == 0 and k > 0:
            audio = torch.cat([z[:, 2 * (k // 4 - 1) : 2 * (k // 4)], audio], 1)
    return audio.permute(0, 2, 1).reshape(audio.size(0), -1)


def test_glow_old_checkpoints_convert_to_the_alternating_variant_and_sample_the_same() -> None:
    """``waveglow_old.pt``'s layout: the converted model inverts exactly as glow_old's infer."""
    widths, n_mels, n_layers = [8, 8, 8, 8, 6, 6], 3, 2
    state = _glow_old_state(widths, n_mels, ch=6, n_layers=n_layers)
    model, config = convert_state("waveglow", {k: v.float() for k, v in state.items()})
    assert config["alternate_halves"] and config["n_early_every"] == 4
    model = model.double().eval()
    mel = torch.randn(2, n_mels, 3, dtype=torch.float64)
    z = torch.randn(2, 8, 96, dtype=torch.float64)
    expected = _glow_old_infer(state, mel, z, n_layers)
    latent = z.transpose(1, 2).reshape(2, -1)  # the grouping undone: sample 8 t + j = z[j, t]
    with torch.no_grad():
        audio, _ = model.flow.transform.inverse(latent, model.flow.encode(mel, latent.shape))
    assert torch.allclose(audio, expected, atol=1e-6, rtol=1e-6)
    # The modern layout keeps NVIDIA's public coupling order.
    _, config = convert_state("waveglow", _state_from_manifest("waveglow"))
    assert not config["alternate_halves"]


def test_a_shift_only_tarflow_brings_its_prior_variance() -> None:
    """TarFlow's ``var`` buffer ``(T, D)`` becomes the base's ``(C, H, W)`` variance."""
    state = _state_from_manifest("tarflow_small_bench")
    n_tokens, n_features = 64, 48
    for k in range(4):
        for name in ("weight", "bias"):
            key = f"blocks.{k}.proj_out.{name}"
            state[key] = state[key][:n_features]  # shift only: one output per feature
    state["var"] = torch.rand(n_tokens, n_features) + 0.5
    model, config = convert_state("tarflow", state)
    assert not config["affine"]
    tokens, _ = model.flow.transform.layers[0](model.flow.base.var[None])  # patchify it back
    assert torch.equal(tokens[0], state["var"])
