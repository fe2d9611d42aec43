"""Reference checkpoints: manifests' keys and shapes convert, load and give finite
log-likelihoods; pickled modules are read without running code; foreign pickles are refused."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
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
        if key.endswith("invconv.p"):  # Glow's LU factors: a permutation and +-1 signs
            tensor = torch.eye(shape[0])[torch.randperm(shape[0], generator=generator)]
        if key.endswith("invconv.sign_s"):
            tensor = torch.sign(tensor)
        if key == "prior_h":
            tensor = torch.zeros(shape)
        state[key] = tensor
    return state


WAVEFLOW_H16 = ["height=16", "dilation_cycle=1"]
TARFLOW_NOISE = ["noise=gaussian", "noise_std=0.05"]
CASES = {
    "waveglow": ("waveglow", [], 87_879_272),
    "waveglow_old_format": ("waveglow", [], 87_879_272),
    "waveflow-h16-r64": ("waveflow", WAVEFLOW_H16, 5_950_180),
    "waveflow-h16-r64_L0SG-WaveFlow": (
        "waveflow-parakeet",
        [*WAVEFLOW_H16, "permutation=flip"],
        5_950_164,
    ),
    "nanoflow-naive-h16-r128": ("nanoflow", [*WAVEFLOW_H16, "n_flows=8"], 2_798_408),
    "nanoflow-decomp-h16-r128": ("nanoflow", WAVEFLOW_H16, 2_800_228),
    "nanoflow-h16-r128-emb512": ("nanoflow", WAVEFLOW_H16, 3_865_188),
    "tarflow_small_bench": ("tarflow", TARFLOW_NOISE, 6_532_480),
    "tarflow_small_bench_cond": ("tarflow", TARFLOW_NOISE, 6_542_720),
    "nanoflow_glow_glow_h256": ("glow", [], 15_972_912),
    "nanoflow_glow_nanoflow_naive_h256": ("nanoflow-glow", [], 9_263_064),
    "nanoflow_glow_nanoflow_decomp_h256": ("nanoflow-glow", [], 9_934_896),
    "nanoflow_glow_nanoflow_h256_emb1": ("nanoflow-glow", [], 10_113_264),
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
    shutil.rmtree(tmp_path)  # WaveGlow: 350 MB, source and converted


def test_a_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    state = _state_from_manifest("waveflow-h16-r64")
    state["flows.0.coupling.extra.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="unused.*extra.weight"):
        convert_state("waveflow", state, {"height": 16, "dilation_cycle": 1})
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
    model, config = convert_state("tarflow", state, {"noise": "uniform"})
    assert not config["affine"]
    tokens, _ = model.flow.transform.layers[0](model.flow.base.var[None])  # patchify it back
    assert torch.equal(tokens[0], state["var"])


# -- Glow: one step and the priors, written out as L0SG/NanoFlow's image model computes them --
def _glow_reference_state(hidden: int = 4, k_steps: int = 1, n_levels: int = 2) -> dict:
    """A Glow state dict in the reference layout, every tensor random (zero convs included)."""
    g = torch.Generator().manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    c = 3
    for i in range(n_levels):
        c *= 4
        for k in range(k_steps):
            j = i * (k_steps + 2) + 1 + k
            p = f"flow.layers.{j}"
            state[f"{p}.actnorm.bias"] = 0.1 * torch.randn(1, c, 1, 1, generator=g)
            state[f"{p}.actnorm.logs"] = 0.1 * torch.randn(1, c, 1, 1, generator=g)
            state[f"{p}.invconv.p"] = torch.eye(c)[torch.randperm(c, generator=g)]
            state[f"{p}.invconv.sign_s"] = torch.sign(torch.randn(c, generator=g))
            for name in ("lower", "upper"):
                state[f"{p}.invconv.{name}"] = 0.3 * torch.randn(c, c, generator=g)
            state[f"{p}.invconv.log_s"] = 0.1 * torch.randn(c, generator=g)
            for b, (n_in, size) in {0: (c // 2, 3), 2: (hidden, 1)}.items():
                state[f"{p}.block.{b}.conv.weight"] = 0.2 * torch.randn(
                    hidden, n_in, size, size, generator=g
                )
                state[f"{p}.block.{b}.actnorm.bias"] = 0.1 * torch.randn(
                    1, hidden, 1, 1, generator=g
                )
                state[f"{p}.block.{b}.actnorm.logs"] = 0.1 * torch.randn(
                    1, hidden, 1, 1, generator=g
                )
            state[f"{p}.block.4.conv.weight"] = 0.2 * torch.randn(c, hidden, 3, 3, generator=g)
            state[f"{p}.block.4.conv.bias"] = 0.1 * torch.randn(c, generator=g)
            state[f"{p}.block.4.logs"] = 0.1 * torch.randn(c, 1, 1, generator=g)
        if i < n_levels - 1:
            p = f"flow.layers.{i * (k_steps + 2) + k_steps + 1}.conv"
            state[f"{p}.conv.weight"] = 0.2 * torch.randn(c, c // 2, 3, 3, generator=g)
            state[f"{p}.conv.bias"] = 0.1 * torch.randn(c, generator=g)
            state[f"{p}.logs"] = 0.1 * torch.randn(c, 1, 1, generator=g)
            c //= 2
    state["learn_top_fn.conv.weight"] = 0.2 * torch.randn(2 * c, 2 * c, 3, 3, generator=g)
    state["learn_top_fn.conv.bias"] = 0.1 * torch.randn(2 * c, generator=g)
    state["learn_top_fn.logs"] = 0.1 * torch.randn(2 * c, 1, 1, generator=g)
    state["prior_h"] = torch.zeros(1, 2 * c, 8 // 2**n_levels, 8 // 2**n_levels)
    return {k: v.double() for k, v in state.items()}


def _gaussian_logp(mean: torch.Tensor, logs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p = -0.5 * (2 * logs + (x - mean) ** 2 / torch.exp(2 * logs) + math.log(2 * math.pi))
    return p.sum(dim=(1, 2, 3))


def _glow_reference_logp(
    state: dict, x: torch.Tensor, k_steps: int, n_levels: int
) -> torch.Tensor:
    """log p(x) as model_glow.py computes it: ActNorm, LU 1x1 conv, affine coupling with
    ``sigmoid(s + 2)``; Split2d scores the second half under N(mean, logs) read "cross" (even,
    odd channels); the top prior reads ``learn_top_fn(prior_h)`` "split" (halves)."""

    def zero_conv(p: str, h: torch.Tensor) -> torch.Tensor:
        w = state[f"{p}.conv.weight"]
        out = F.conv2d(h, w, state[f"{p}.conv.bias"], padding=w.shape[-1] // 2)
        return out * torch.exp(3 * state[f"{p}.logs"])

    def conv_actnorm(p: str, h: torch.Tensor) -> torch.Tensor:
        w = state[f"{p}.conv.weight"]
        h = F.conv2d(h, w, padding=w.shape[-1] // 2)
        return (h + state[f"{p}.actnorm.bias"]) * torch.exp(state[f"{p}.actnorm.logs"])

    z, logdet = x, torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(n_levels):
        b, c, h, w = z.shape
        z = (
            z.view(b, c, h // 2, 2, w // 2, 2)
            .permute(0, 1, 3, 5, 2, 4)
            .reshape(b, 4 * c, h // 2, w // 2)
        )
        pixels = z.shape[2] * z.shape[3]
        for k in range(k_steps):
            p = f"flow.layers.{i * (k_steps + 2) + 1 + k}"
            z = (z + state[f"{p}.actnorm.bias"]) * torch.exp(state[f"{p}.actnorm.logs"])
            logdet = logdet + pixels * state[f"{p}.actnorm.logs"].sum()
            n = z.shape[1]
            mask = torch.tril(torch.ones(n, n, dtype=z.dtype), -1)
            lower = state[f"{p}.invconv.lower"] * mask + torch.eye(n, dtype=z.dtype)
            upper = state[f"{p}.invconv.upper"] * mask.T + torch.diag(
                state[f"{p}.invconv.sign_s"] * torch.exp(state[f"{p}.invconv.log_s"])
            )
            weight = state[f"{p}.invconv.p"] @ lower @ upper
            z = F.conv2d(z, weight[..., None, None])
            logdet = logdet + pixels * state[f"{p}.invconv.log_s"].sum()
            z1, z2 = z[:, : n // 2], z[:, n // 2 :]
            hidden = torch.relu(conv_actnorm(f"{p}.block.0", z1))
            hidden = torch.relu(conv_actnorm(f"{p}.block.2", hidden))
            out = zero_conv(f"{p}.block.4", hidden)
            shift, scale = out[:, 0::2], torch.sigmoid(out[:, 1::2] + 2.0)
            z2 = (z2 + shift) * scale
            logdet = logdet + torch.log(scale).sum(dim=(1, 2, 3))
            z = torch.cat([z1, z2], 1)
        if i < n_levels - 1:
            n = z.shape[1]
            z1, z2 = z[:, : n // 2], z[:, n // 2 :]
            out = zero_conv(f"flow.layers.{i * (k_steps + 2) + k_steps + 1}.conv", z1)
            logdet = logdet + _gaussian_logp(out[:, 0::2], out[:, 1::2], z2)
            z = z1
    top = zero_conv("learn_top_fn", state["prior_h"])
    n = top.shape[1] // 2
    return logdet + _gaussian_logp(top[:, :n], top[:, n:], z)


def test_a_converted_glow_gives_the_reference_log_likelihood() -> None:
    """Pins the conventions: the squeeze order, ActNorm, the LU factors, the coupling's
    shift/scale interleaving and ``sigmoid(s + 2)``, the split prior read from interleaved
    channels and the top prior from halves. Our latent is the reference's standardised by its
    prior, so the log-likelihoods agree exactly."""
    state = _glow_reference_state(hidden=4, k_steps=2, n_levels=2)
    model, config = convert_state("glow", state)
    assert (config["n_levels"], config["n_steps"], config["hidden"]) == (2, 2, 4)
    assert (config["image_size"], config["in_channels"]) == (8, 3)
    model = model.double()
    x = (
        torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        - 0.5
    )
    with torch.no_grad():
        ours = model.flow.log_prob(x)
    expected = _glow_reference_logp(state, x, k_steps=2, n_levels=2)
    assert torch.allclose(ours, expected, rtol=1e-10, atol=1e-8)


# -- settings the weights do not record are never guessed ------------------------------------
def test_a_waveflow_without_its_height_is_refused_naming_each_missing_value() -> None:
    state = _state_from_manifest("nanoflow-naive-h16-r128")
    with pytest.raises(ConversionError) as error:
        convert_state("nanoflow", state)
    message = str(error.value)
    for key in ("height (", "dilation_cycle (", "n_flows (", "--config"):
        assert key in message
    parakeet = _state_from_manifest("waveflow-h16-r64_L0SG-WaveFlow")
    with pytest.raises(ConversionError, match=r"permutation \(flip or bipartize"):
        convert_state("waveflow-parakeet", parakeet, {"height": 16, "dilation_cycle": 1})
    with pytest.raises(ConversionError, match=r"noise \(the training noise"):
        convert_state("tarflow", _state_from_manifest("tarflow_small_bench"))


def _nanoflow_config(tmp_path: Path, **changes: object) -> Path:
    """A configs/nanoflow-naive-h16-r128.json as L0SG/NanoFlow ships it, with ``changes``."""
    model = {
        "model_name": "nanoflow-naive-h16-r128",
        "cin_channels": 80,
        "res_channels": 128,
        "n_height": 16,
        "n_layer": 8,
        "n_flow": 8,
        "n_layer_per_cycle": 1,
        "coupling_type": "nanoflow_naive",
        **changes,
    }
    data = {"sampling_rate": 22050, "hop_length": 256}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"waveflow_config": model, "data_config": data}))
    return path


def test_the_reference_config_file_supplies_the_missing_values(tmp_path: Path) -> None:
    source = tmp_path / "naive.pt"
    torch.save({"model": _state_from_manifest("nanoflow-naive-h16-r128")}, source)
    config = _nanoflow_config(tmp_path)
    assert (
        main(["convert", "nanoflow", str(source), str(tmp_path / "out"), "--config", str(config)])
        == 0
    )
    model, run_config = load_model(tmp_path / "out")
    assert run_config["model"]["height"] == 16 and run_config["model"]["n_flows"] == 8
    assert run_config["model"]["sharing"] == "shared"
    assert count_parameters(model).total == 2_798_408


def test_values_given_two_ways_must_agree(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "naive.pt"
    torch.save({"model": _state_from_manifest("nanoflow-naive-h16-r128")}, source)
    config = _nanoflow_config(tmp_path)
    out = tmp_path / "out"
    argv = ["convert", "nanoflow", str(source), str(out), "height=8", "--config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "height" in err and "16" in err and "8" in err and not out.exists()
    # The config must agree with the shapes too: res_channels 64 is not this checkpoint's 128,
    # and a decomp config does not describe a naive checkpoint.
    for change, named in [
        ({"res_channels": 64}, "channels"),
        ({"coupling_type": "nanoflow_decomp"}, "sharing"),
    ]:
        bad = _nanoflow_config(tmp_path, **change)
        assert main(["convert", "nanoflow", str(source), str(out), "--config", str(bad)]) == 2
        assert named in capsys.readouterr().err


def test_tarflow_reads_its_noise_from_the_file_name_as_train_py_writes_it(tmp_path: Path) -> None:
    source = tmp_path / "imagenet_model_4_256_4_4_0.05.pth"  # 4 layers per block: not so
    torch.save(_state_from_manifest("tarflow_small_bench"), source)
    assert main(["convert", "tarflow", str(source), str(tmp_path / "out")]) == 2
    source = source.rename(tmp_path / "imagenet_model_4_256_4_2_uniform.pth")
    assert main(["convert", "tarflow", str(source), str(tmp_path / "out")]) == 0
    _, run_config = load_model(tmp_path / "out")
    assert run_config["model"]["noise"] == "uniform"


def test_the_glow_map_names_every_tensor_once() -> None:
    """A reference key left over, or one of ours left unfilled, stops the conversion."""
    state = _glow_reference_state()
    state["flow.layers.1.extra"] = torch.zeros(2)
    with pytest.raises(ConversionError, match="unused.*flow.layers.1.extra"):
        convert_state("glow", state)
    state = _glow_reference_state()
    del state["flow.layers.1.invconv.sign_s"]
    with pytest.raises(ConversionError, match="lacks flow.layers.1.invconv.sign_s"):
        convert_state("glow", state)


def test_glow_hparams_json_is_read_and_checked() -> None:
    """Glow-PyTorch's hparams.json: it must describe the checkpoint and a supported variant."""
    state = _state_from_manifest("nanoflow_glow_nanoflow_decomp_h256")
    hparams = {"model_type": "nanoflow_decomp", "K": 32, "L": 3, "hidden_channels": 256}
    _, config = convert_state("nanoflow-glow", state, config=hparams)
    assert config["sharing"] == "decomposed" and config["n_steps"] == 32
    with pytest.raises(ConversionError, match="sharing is 'decomposed'.*'nanoflow'"):
        convert_state("nanoflow-glow", state, config=hparams | {"model_type": "nanoflow"})
    with pytest.raises(ConversionError, match="flow_coupling='additive' is not supported"):
        convert_state("nanoflow-glow", state, config=hparams | {"flow_coupling": "additive"})
    with pytest.raises(ConversionError, match="is not a glow model"):
        convert_state("glow", _state_from_manifest("nanoflow_glow_glow_h256"), config=hparams)
