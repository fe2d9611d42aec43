"""``sharedflow export``: a trained or converted flow as an ONNX file or a torch.export program.

The model is exported in its deploy form (weight norm removed, flow embeddings folded) as one
of the graphs of ``sharedflow.export.graphs``, with the batch (and, for vocoders, the frame)
dimension dynamic. The file records what a user needs to drive it without sharedflow: the
graph, its inputs, the model's name, parameter count, sample rate, hop length and mel settings
(or image shape), as ONNX metadata properties or, for an exported program, the extra file
``sharedflow.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sharedflow import __version__
from sharedflow.audio.denoise import Denoiser
from sharedflow.errors import first_line
from sharedflow.export.graphs import BitsPerDim, ImageSampling, Synthesis
from sharedflow.layers.autoregressive import AffineAutoregressive
from sharedflow.models.vocoder import Vocoder
from sharedflow.sharing import count_parameters, deploy

__all__ = ["FORMATS", "ExportError", "Graph", "build_graph", "export", "graphs_of", "metadata"]

FORMATS = ("onnx", "exported-program")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
METADATA_FILE = "sharedflow.json"


class ExportError(ValueError):
    """A model, graph or setting that cannot be exported, or an export that failed."""


@dataclass
class Graph:
    """A module ready to export, with example inputs and the names and dynamic axes of each."""

    module: nn.Module
    inputs: dict[str, Tensor]
    outputs: list[str]
    dynamic: dict[str, dict[int, Any]]


def _frames_example(model: nn.Module, batch: int = 2, frames: int = 5) -> dict[str, Tensor]:
    dtype = next(model.flow.parameters()).dtype
    return {
        "mel": torch.randn(batch, model.mel.channels, frames, dtype=dtype),
        "noise": torch.randn(batch, model.hop_length * frames, dtype=dtype),
    }


def _image_inputs(model: nn.Module, name: str, batch: int = 2) -> dict[str, Tensor]:
    dtype = next(model.parameters()).dtype
    inputs = {name: torch.rand(batch, *model.image_shape, dtype=dtype) - 0.5}
    if model.num_classes:
        inputs["labels"] = torch.arange(batch) % model.num_classes
    return inputs


def graphs_of(model: nn.Module) -> tuple[str, ...]:
    """The graphs a model can be exported as; the first is the default."""
    return ("synthesize",) if isinstance(model, Vocoder) else ("sample", "bpd")


def build_graph(
    model: nn.Module, graph: str | None = None, denoise: float = 0.0
) -> tuple[str, Graph]:
    """The graph ``graph`` (default: the model's first) of a deployed ``model``."""
    available = graphs_of(model)
    graph = available[0] if graph is None else graph
    if graph not in available:
        raise ExportError(
            f"a {model.modality} model exports as {' or '.join(available)}, not {graph}"
        )
    if denoise and graph != "synthesize":
        raise ExportError("--denoise is for vocoder synthesis")
    batch = torch.export.Dim("batch", min=1)
    # An autoregressive inverse (WaveFlow's rows, TarFlow's tokens) is one scan in the graph,
    # not a copy of its step per position.
    for layer in model.modules():
        if isinstance(layer, AffineAutoregressive):
            layer.scan = True
    if graph == "synthesize":
        denoiser = Denoiser(model) if denoise else None
        # The denoiser's STFT pads by reflection, which needs more than n_fft / 2 samples.
        fewest = model.mel.n_fft // 2 // model.hop_length + 2 if denoise else 2
        frames = torch.export.Dim("frames", min=fewest)
        return graph, Graph(
            Synthesis(model, denoiser, denoise),
            _frames_example(model, frames=fewest + 3),
            ["audio"],
            {"mel": {0: batch, 2: frames}, "noise": {0: batch, 1: model.hop_length * frames}},
        )
    name, module = (
        ("noise", ImageSampling(model)) if graph == "sample" else ("x", BitsPerDim(model))
    )
    inputs = _image_inputs(model, name)
    dynamic = {key: {0: batch} for key in inputs}
    return graph, Graph(module, inputs, ["images" if graph == "sample" else "bpd"], dynamic)


def metadata(model: nn.Module, config: dict[str, Any], graph: str, dtype: str) -> dict[str, str]:
    """What the file records about the model (all values as strings)."""
    info: dict[str, Any] = {
        "producer": f"sharedflow {__version__}",
        "model": config.get("name", ""),
        "architecture": str(config.get("model", {}).get("_target_", "")),
        "graph": graph,
        "dtype": dtype,
        "parameters": count_parameters(model).total,
    }
    if isinstance(model, Vocoder):
        info |= model.mel.settings() | {
            "log_clamp": model.mel.clamp,
            "temperature": model.temperature,
            "inputs": "mel (B, n_mels, F): natural-log mel; "
            "noise (B, hop F): temperature x N(0, 1)",
        }
    else:
        info |= {
            "image_shape": list(model.image_shape),
            "num_classes": model.num_classes,
            "data_range": model.data_range,
            "inputs": (
                "noise (B, C, H, W): temperature x N(0, 1)"
                if graph == "sample"
                else f"x (B, C, H, W): dequantised, in [-{model.data_range / 2}, "
                f"{model.data_range / 2})"
            )
            + ("; labels (B,) int64, -1 for none" if model.num_classes else ""),
        }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()}


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}: pip install 'sharedflow[export]'"
        )


def _check_out(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name")
    if not parent.is_dir():
        raise ExportError(f"--out {out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: cannot write in {parent}")


def _trace(what: str, run: Callable[[], Any]) -> Any:
    try:
        return run()
    except ExportError:
        raise
    except Exception as error:  # torch.export's and the ONNX translator's many error types
        cause = error
        while cause.__cause__ is not None:  # the exporters wrap the construct that failed
            cause = cause.__cause__
        raise ExportError(f"{what} cannot be exported: {first_line(cause)}") from error


def export(
    model: nn.Module,
    config: dict[str, Any],
    out: str | Path,
    format: str = "onnx",
    graph: str | None = None,
    dtype: str = "fp32",
    denoise: float = 0.0,
    optimize: bool = True,
) -> Path:
    """Export ``model`` (trained or converted, with its run ``config``) to the file ``out``.

    ``optimize``: run the ONNX optimiser (constant folding, dead code) on the file; onnxruntime
    optimises again when it loads it, so False only makes exporting faster.
    """
    out = Path(out)
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}: {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}: {', '.join(DTYPES)}")
    _check_out(out)
    if format == "onnx":
        _require("onnx", "onnxscript")
    model = deploy(model).to(DTYPES[dtype]).requires_grad_(False)  # an inference graph
    if isinstance(model, Vocoder):
        model.mel.float()  # the front end is not in the graph; keep it exact for the denoiser
    graph, spec = build_graph(model, graph, denoise)
    spec.module.eval()
    info = metadata(model, config, graph, dtype)
    what = f"{info['model'] or 'the model'} ({graph})"
    args = tuple(spec.inputs.values())
    dynamic = {name: spec.dynamic[name] for name in spec.inputs}
    if format == "exported-program":
        program = _trace(
            what, lambda: torch.export.export(spec.module, args, dynamic_shapes=dynamic)
        )
        torch.export.save(program, out, extra_files={METADATA_FILE: json.dumps(info)})
        return out
    onnx_program = _trace(
        what,
        lambda: torch.onnx.export(
            spec.module,
            args,
            input_names=list(spec.inputs),
            output_names=spec.outputs,
            dynamic_shapes=dynamic,
            dynamo=True,
            external_data=False,
            optimize=optimize,
            verbose=False,
        ),
    )
    proto = onnx_program.model_proto
    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    import onnx

    tmp = out.with_name(out.name + ".tmp")
    onnx.save(proto, tmp)
    tmp.replace(out)
    return out
