"""onnxruntime against PyTorch: synthesis of 1 s of audio by an exported vocoder, one process.

Builds a recipe's model (random weights, perturbed so that no coupling is the identity: speed
does not depend on them), exports its
synthesis graph to ONNX, then times PyTorch (deploy form, eager) and onnxruntime on the same
mel and noise, interleaved, and prints the export time, the medians, the ratio and the largest
difference. Each figure states the CPU capability.

    python bench/export.py audio/waveglow --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from sharedflow.export import build_graph, export
from sharedflow.recipes import build, compose
from sharedflow.sharing import deploy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    import onnxruntime as ort

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = build(compose(args.recipe).model).eval()
    with torch.no_grad():  # zero-initialised output layers would make every coupling identity
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    frames = round(args.seconds * model.sample_rate / model.hop_length)
    mel = torch.randn(1, model.mel.n_mels, frames)
    noise = 0.6 * torch.randn(1, model.hop_length * frames)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        start = time.perf_counter()
        export(model, {"name": args.recipe}, path)
        export_seconds = time.perf_counter() - start
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, spec = build_graph(deploy(model))
    feeds = {"mel": mel.numpy(), "noise": noise.numpy()}
    torch_times, ort_times = [], []
    with torch.inference_mode():
        expected = spec.module(mel, noise)
        got = session.run(None, feeds)[0]
        for _ in range(args.repeats):
            start = time.perf_counter()
            spec.module(mel, noise)
            torch_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feeds)
            ort_times.append(time.perf_counter() - start)
    ours, theirs = statistics.median(torch_times), statistics.median(ort_times)
    difference = (torch.from_numpy(got) - expected).abs().max().item()
    print(
        f"{args.recipe}: {frames * model.hop_length / model.sample_rate:.2f} s of audio, "
        f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; "
        f"export {export_seconds:.0f} s; PyTorch {ours * 1e3:.0f} ms, onnxruntime "
        f"{theirs * 1e3:.0f} ms (onnxruntime/PyTorch {theirs / ours:.2f}); max difference "
        f"{difference:.1e}"
    )


if __name__ == "__main__":
    main()
