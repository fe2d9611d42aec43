"""``sharedflow export``: every family and sharing mode exports, and onnxruntime (or the
exported program) reproduces PyTorch from the same inputs; bad requests get one-line errors."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sharedflow.cli import main
from sharedflow.export import ExportError, build_graph, export
from sharedflow.recipes import build
from sharedflow.sharing import count_parameters, deploy

ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
README = Path(__file__).parents[1] / "README.md"

_WAVEFLOW = dict(
    _target_="sharedflow.models.waveflow", height=2, channels=4, n_layers=2, n_flows=2, n_mels=6
)
VOCODERS = {
    "waveflow": _WAVEFLOW,
    "nanoflow-naive": _WAVEFLOW | {"sharing": "shared"},
    "nanoflow-decomp": _WAVEFLOW | {"sharing": "decomposed"},
    "nanoflow": _WAVEFLOW | {"sharing": "nanoflow", "embedding_dim": 3},
    "waveflow-parakeet": _WAVEFLOW
    | {"_target_": "sharedflow.models.waveflow_parakeet", "permutation": "bipartize"},
    "waveglow": dict(
        _target_="sharedflow.models.waveglow",
        n_flows=2,
        n_group=4,
        n_early_every=1,
        n_early_size=2,
        channels=4,
        n_layers=1,
        n_mels=6,
    ),
}
_GLOW = dict(
    _target_="sharedflow.models.nanoflow_glow",
    image_size=4,
    n_levels=1,
    n_steps=2,
    hidden=4,
    n_estimator_layers=1,
    embedding_dim=1,
)
IMAGES = {
    "glow": (
        dict(_target_="sharedflow.models.glow", image_size=4, n_levels=1, n_steps=1, hidden=4),
        "sample",
    ),
    "nanoflow-glow": (_GLOW | {"sharing": "nanoflow"}, "bpd"),
    "nanoflow-glow-naive": (_GLOW | {"sharing": "shared"}, "sample"),
    "tarflow": (
        dict(
            _target_="sharedflow.models.tarflow",
            image_size=4,
            patch_size=2,
            channels=64,
            n_blocks=2,
            n_layers=1,
            num_classes=3,
        ),
        "bpd",
    ),
    "tarflow-kv-cache": (
        dict(
            _target_="sharedflow.models.tarflow",
            image_size=4,
            patch_size=2,
            channels=64,
            n_blocks=1,
            n_layers=1,
        ),
        "sample",
    ),
}


def _perturbed(config: dict) -> torch.nn.Module:
    """A model whose zero-initialised parts are not zero, with ActNorm initialised."""
    torch.manual_seed(0)
    model = build(config)
    if getattr(model, "modality", "") == "image":
        model.train()
        with torch.no_grad():
            model(
                (
                    torch.randint(0, 256, (4, *model.image_shape), dtype=torch.uint8),
                    torch.zeros(4, dtype=torch.long),
                )
            )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _export_matches_torch(
    model: torch.nn.Module, graph: str | None, path: Path, inputs: dict[str, torch.Tensor]
) -> None:
    """onnxruntime for ``.onnx`` (unoptimised: the optimiser is onnxscript's, and it doubles
    the export time), the exported program's own runtime for ``.pt2``."""
    onnx = path.suffix == ".onnx"
    fmt = "onnx" if onnx else "exported-program"
    export(model, {"name": path.stem, "model": {}}, path, fmt, graph, optimize=False)
    _, spec = build_graph(deploy(model), graph)
    with torch.no_grad():
        expected = spec.module(*inputs.values()).numpy()
        if onnx:
            session = ort.InferenceSession(str(path))
            got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        else:
            got = torch.export.load(path).module()(*inputs.values()).numpy()
    if expected.dtype == np.uint8:  # sampled images: a rounding may differ at a bin edge
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["waveflow", "nanoflow", "waveglow"])
def test_vocoder_synthesis_exported_equals_pytorch(name: str, tmp_path: Path) -> None:
    """Other batch and frame counts than the export's examples: the axes are dynamic. One
    member of each family goes through onnxruntime, NanoFlow's shared estimator through the
    exported program (the ONNX translation they share costs 10-20 s a graph on 2 cores, and
    tracing each flow's row loop about 7 s). The other sharing modes and Parakeet's layout
    differ only in which modules the row loop calls and how it shifts its rows, which the scan
    test below checks for each of them."""
    model = _perturbed(VOCODERS[name])
    frames = 7
    inputs = {
        "mel": torch.randn(3, 6, frames),
        "noise": 0.8 * torch.randn(3, model.hop_length * frames),
    }
    suffix = ".onnx" if name in ("waveflow", "waveglow") else ".pt2"
    _export_matches_torch(model, None, tmp_path / f"{name}{suffix}", inputs)
    if name == "waveflow":  # the row loop is one ONNX loop per flow, not h copies of a row
        import onnx

        graph = onnx.load(str(tmp_path / f"{name}{suffix}")).graph
        assert sum(node.op_type == "Scan" for node in graph.node) == VOCODERS[name]["n_flows"]


@pytest.mark.parametrize("name", sorted(set(VOCODERS) - {"waveglow"}))
def test_the_row_loop_as_a_scan_equals_the_loop(name: str) -> None:
    """``AffineAutoregressive.scan``: the exported form of WaveFlow's inverse, row state carried
    functionally, gives the cached loop's audio (ShiftedInput and ShiftedOutput layouts)."""
    from sharedflow.layers.autoregressive import AffineAutoregressive

    model = deploy(_perturbed(VOCODERS[name] | {"height": 4, "n_layers": 3, "dilation_cycle": 2}))
    mel, z = torch.randn(2, 6, 5), torch.randn(2, model.hop_length * 5)
    with torch.no_grad():
        loop = model.decode(mel, z)
        for layer in model.modules():
            if isinstance(layer, AffineAutoregressive):
                layer.scan = True
        scanned = model.decode(mel, z)
    torch.testing.assert_close(scanned, loop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_graphs_in_onnxruntime_equal_pytorch(name: str, tmp_path: Path) -> None:
    config, graph = IMAGES[name]
    model = _perturbed(config)
    key = "noise" if graph == "sample" else "x"
    inputs = {key: torch.rand(3, *model.image_shape) - 0.5}
    if model.num_classes:
        inputs["labels"] = torch.tensor([2, -1, 0])
    _export_matches_torch(model, graph, tmp_path / f"{name}.onnx", inputs)
    if name == "tarflow-kv-cache":  # the token loop is one ONNX loop per block
        import onnx

        nodes = onnx.load(str(tmp_path / f"{name}.onnx")).graph.node
        assert sum(node.op_type == "Scan" for node in nodes) == config["n_blocks"]


def test_the_file_records_the_model_and_its_front_end(tmp_path: Path) -> None:
    model = _perturbed(VOCODERS["waveglow"])
    config = {"name": "wg", "model": VOCODERS["waveglow"]}
    path = export(model, config, tmp_path / "wg.onnx", optimize=False)
    meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert meta["model"] == "wg" and meta["graph"] == "synthesize"
    assert int(meta["parameters"]) == count_parameters(deploy(model)).total
    assert int(meta["hop_length"]) == 256 and int(meta["n_mels"]) == 6
    assert json.loads(meta["f_max"]) == 8000.0 and int(meta["sample_rate"]) == 22050


def test_an_exported_program_runs_and_keeps_its_metadata(tmp_path: Path) -> None:
    model = _perturbed(VOCODERS["waveglow"])
    path = export(model, {"name": "wg"}, tmp_path / "wg.pt2", "exported-program")
    extra = {"sharedflow.json": ""}
    program = torch.export.load(path, extra_files=extra)
    assert json.loads(extra["sharedflow.json"])["graph"] == "synthesize"
    mel, noise = torch.randn(2, 6, 9), torch.randn(2, 256 * 9)
    _, spec = build_graph(deploy(model))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(mel, noise), spec.module(mel, noise))


def test_the_denoiser_is_part_of_the_graph_when_asked(tmp_path: Path) -> None:
    """WaveGlow: the denoiser follows any vocoder, and WaveGlow's graph is the quickest."""
    model = _perturbed(VOCODERS["waveglow"])
    mel, noise = torch.randn(1, 6, 6), torch.randn(1, 256 * 6)
    path = export(model, {"name": "wg"}, tmp_path / "wg.pt2", "exported-program", denoise=0.5)
    _, spec = build_graph(deploy(model), denoise=0.5)
    _, plain = build_graph(deploy(model))
    with torch.no_grad():
        denoised = torch.export.load(path).module()(mel, noise)
        torch.testing.assert_close(denoised, spec.module(mel, noise))
        assert not torch.allclose(denoised, plain.module(mel, noise))


# -- bad requests -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "wg"
    argv = [
        "train",
        "audio/waveglow-tiny",
        f"run_dir={run}",
        "trainer.max_steps=2",
        "trainer.progress=false",
        "data.builtin_clips=12",
        "data.n_test=2",
        "model.n_flows=2",  # a small graph: ONNX translation takes seconds per flow
        "model.n_layers=2",
    ]
    assert main(argv) == 0
    return run


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_requests_get_one_line_errors(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["export", str(tiny_run)]
    assert "exports as synthesize, not sample" in _one_line_error(
        capsys, [*base, "--out", str(tmp_path / "a.onnx"), "--graph", "sample"]
    )
    assert "does not exist" in _one_line_error(
        capsys, [*base, "--out", str(tmp_path / "missing" / "a.onnx")]
    )
    assert "is a directory" in _one_line_error(capsys, [*base, "--out", str(tmp_path)])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name)
    )
    assert "pip install 'sharedflow[export]'" in _one_line_error(
        capsys, [*base, "--out", str(tmp_path / "a.onnx")]
    )


def test_a_construct_that_cannot_be_exported_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("wrapper") from RuntimeError("data-dependent branch in Foo.forward")

    monkeypatch.setattr(torch.export, "export", refuse)
    model = _perturbed(VOCODERS["waveflow"])
    with pytest.raises(ExportError, match="cannot be exported: data-dependent branch in Foo"):
        export(model, {"name": "wf"}, tmp_path / "wf.pt2", "exported-program")


# -- the README's deployment example ------------------------------------------------------------
def test_the_readme_onnx_script_writes_the_wav_sharedflow_synthesizes(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Export, then the README's script (onnxruntime, librosa, numpy; no sharedflow) on a wav,
    then ``sharedflow synthesize`` on the script's mel with its noise: the same wav."""
    (script,) = re.findall(r"```py\n(.*?)```", README.read_text(), re.S)
    assert "sharedflow" not in script.replace('"sharedflow', "")  # no import of ours
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "vocoder.onnx")]) == 0
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "speech.wav", 0.1 * rng.standard_normal(5000), 22050)
    (tmp_path / "onnx_synthesis.py").write_text(script)
    subprocess.run([sys.executable, "onnx_synthesis.py", "speech.wav"], cwd=tmp_path, check=True)
    argv = [
        "synthesize",
        str(tiny_run),
        str(tmp_path / "mel.npy"),
        "--noise",
        str(tmp_path / "z.npy"),
        "--out",
        str(tmp_path / "wavs"),
        "--dtype",
        "fp32",
    ]
    assert main(argv) == 0
    ours, _ = sf.read(tmp_path / "wavs" / "mel.wav", dtype="int16")
    theirs, _ = sf.read(tmp_path / "onnx.wav", dtype="int16")
    assert ours.shape == theirs.shape and np.abs(ours.astype(int) - theirs).max() <= 1
