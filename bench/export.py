"""onnxruntime against PyTorch on an exported graph, one process: a vocoder's synthesis of 1 s of
audio, or an image flow's sampling.

Builds a recipe's model (random weights, perturbed so that no flow step is the identity: speed
does not depend on them), exports its synthesis or sampling graph to ONNX, then times PyTorch
(deploy form, eager) and onnxruntime on the same inputs, interleaved, and prints the export time,
the medians, the ratio and the largest difference. Image flows are timed in PyTorch as ``sample``
runs them (TarFlow: the KV-cache loop, not the scan the graph holds). Each figure states the CPU
capability.

    python bench/export.py audio/waveglow --repeats 5
    python bench/export.py image/tarflow-imagenet64 --repeats 1 --batch 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from sharedflow.export import build_graph, export
from sharedflow.layers import AffineAutoregressive
from sharedflow.recipes import build, compose
from sharedflow.sharing import deploy


def _perturbed(model: nn.Module) -> nn.Module:
    """Vocoders: every weight moved by 0.01 N(0, 1). Image flows: only the zero-initialised
    output layers, by 3e-3 (TarFlow's other weights are at their initialisation, and larger
    moves saturate its samples)."""
    with torch.no_grad():
        for p in model.parameters():
            if model.modality == "audio":
                p.add_(0.01 * torch.randn_like(p))
            elif not p.any():
                p.add_(3e-3 * torch.randn_like(p))
    return model


def _inputs(model: nn.Module, seconds: float, batch: int) -> tuple[dict[str, Tensor], str]:
    """The graph's inputs, and what they are in words."""
    if model.modality == "audio":
        frames = round(seconds * model.sample_rate / model.hop_length)
        inputs = {
            "mel": torch.randn(1, model.mel.n_mels, frames),
            "noise": 0.6 * torch.randn(1, model.hop_length * frames),
        }
        return inputs, f"{frames * model.hop_length / model.sample_rate:.2f} s of audio"
    inputs = {"noise": torch.randn(batch, *model.image_shape)}
    if model.num_classes:
        inputs["labels"] = torch.arange(batch) % model.num_classes
    return inputs, f"{batch} image(s) {'x'.join(map(str, model.image_shape))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="vocoders: audio to make")
    parser.add_argument("--batch", type=int, default=1, help="image flows: images to sample")
    args = parser.parse_args()
    import onnxruntime as ort

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = _perturbed(build(compose(args.recipe).model).eval())
    inputs, what = _inputs(model, args.seconds, args.batch)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        start = time.perf_counter()
        export(model, {"name": args.recipe}, path)
        export_seconds = time.perf_counter() - start
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, spec = build_graph(deploy(model))
    if model.modality == "image":
        for layer in spec.module.modules():
            if isinstance(layer, AffineAutoregressive):
                layer.scan = False
    feeds = {name: value.numpy() for name, value in inputs.items()}
    torch_times, ort_times = [], []
    with torch.inference_mode():
        expected = spec.module(*inputs.values())
        got = torch.from_numpy(session.run(None, feeds)[0])
        for _ in range(args.repeats):
            start = time.perf_counter()
            spec.module(*inputs.values())
            torch_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feeds)
            ort_times.append(time.perf_counter() - start)
    ours, theirs = statistics.median(torch_times), statistics.median(ort_times)
    difference = (got.double() - expected.double()).abs().max().item()
    spread = ""  # samples: a constant image would make the comparison empty
    if got.dtype == torch.uint8:
        spread = f"; output std {expected.double().std().item():.1f}"
    print(
        f"{args.recipe}: {what}, CPU {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads; export {export_seconds:.0f} s; PyTorch "
        f"{ours * 1e3:.0f} ms, onnxruntime {theirs * 1e3:.0f} ms (onnxruntime/PyTorch "
        f"{theirs / ours:.2f}); max difference {difference:.1e}{spread}"
    )


if __name__ == "__main__":
    main()
