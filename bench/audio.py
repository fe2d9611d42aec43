"""Vocoder benchmarks with the shapes of shared/reference/audio.md section g.

Train step: zero_grad, log-likelihood of audio (1, 16000) in [-1, 1] given mel (1, 80, 63),
backward (no optimiser step), training form with weight norm. Synthesis: deploy form, no_grad,
mel (1, 80, 87) -> 22,272 samples (about 1 s; ``--frames`` sets the length), temperature 0.6 for
WaveGlow and 1.0 otherwise. Median and min over --repeats runs after one warm-up; each model
runs in its own process so that peak memory (max RSS) is its own. Prints a Markdown table.
"probe" is the rate of a fixed GEMM of WaveFlow's row-conv shape in the same dtype, measured
around each run: shared VMs drift by up to ~2x, and figures compare only at similar probe rates.
"GFLOP" is one step's (or one synthesis') matrix-product and convolution work as torch's FLOP
counter counts it, and "achieved / probe" that work per second of the median time as a fraction
of the probe rate: how near the machine's own GEMM speed the model runs (on a CPU; on a GPU that
small probe is bound by its launch, so the column reads n/a).

    python bench/audio.py                       # all models, CPU, 2 threads
    python bench/audio.py --device cuda --dtype bf16 --what synth --graph   # CUDA graph replay
    python bench/audio.py --device cuda --what train --precision bf16 --batch 8  # autocast

``--graph`` replays synthesis from a CUDA graph (``sharedflow.audio.graphed``; on a CPU it is
plain ``decode``). ``--precision`` trains under autocast in that precision; ``--batch`` sets the
training batch (kHz then counts every sample of the batch).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from common import count_flops, describe, gemm_rate, sync

MODELS = {
    "waveglow": ("sharedflow.models:waveglow", {}),
    "waveflow-h16-r64": ("sharedflow.models:waveflow", {"height": 16, "channels": 64}),
    "waveflow-h16-r128": ("sharedflow.models:waveflow", {"height": 16, "channels": 128}),
    "nanoflow-h16-r128-emb512": (
        "sharedflow.models:waveflow",
        {"height": 16, "channels": 128, "sharing": "nanoflow", "embedding_dim": 512},
    ),
}
TRAIN_SAMPLES = 16000


def _time(fn, repeats: int, device: torch.device) -> list[float]:  # noqa: ANN001
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def probe(device: torch.device, dtype: torch.dtype) -> float:
    """GFLOP/s of ``(1392, 576) @ (576, 128)``, the GEMM of one WaveFlow h16-r64 row conv."""
    return gemm_rate(device, dtype, 1392, 576, 128)


def run_one(
    name: str,
    what: str,
    device: str,
    dtype: str,
    repeats: int,
    threads: int,
    graph: bool = False,
    precision: str = "fp32",
    batch: int = 1,
    frames: int = 87,
) -> dict:
    import importlib

    from sharedflow.audio.graphed import GraphedDecode
    from sharedflow.precision import autocast
    from sharedflow.sharing import count_parameters, deploy

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module, builder = MODELS[name][0].split(":")
    model = getattr(importlib.import_module(module), builder)(**MODELS[name][1])
    dev = torch.device(device)
    cast = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    rate = probe(dev, cast if what == "synth" else torch.float32)
    if what == "train":
        model.to(dev).train()
        audio = (0.1 * torch.randn(batch, TRAIN_SAMPLES)).clamp(-1, 1).to(dev)
        mel = (torch.randn(batch, 80, 63) - 5).to(dev)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            with autocast(precision, dev):
                log_p = model.flow.log_prob(audio, mel)
            loss = -log_p.float().sum() / (batch * TRAIN_SAMPLES)
            loss.backward()

        times = _time(step, repeats, dev)
        flops = count_flops(step)
        n_samples = batch * TRAIN_SAMPLES
    else:
        model = deploy(model).to(dev).to(cast)
        mel = (torch.randn(1, 80, frames) - 5).to(dev, cast)
        temperature = 0.6 if name == "waveglow" else 1.0
        if graph:
            decode = GraphedDecode(model, 1, frames)
            z = torch.randn(1, 256 * frames, device=dev, dtype=cast)
            times = _time(lambda: decode(mel, temperature * z), repeats, dev)
        else:
            times = _time(lambda: model.synthesize(mel, temperature), repeats, dev)
        flops = count_flops(lambda: model.synthesize(mel, temperature))
        n_samples = 256 * frames
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    median = statistics.median(times)
    rate = (rate + probe(dev, cast if what == "synth" else torch.float32)) / 2
    return {
        "model": name,
        "what": what,
        "device": describe(dev),
        "dtype": dtype,
        "params": count_parameters(model).total,
        "median_s": median,
        "min_s": min(times),
        "khz": n_samples / median / 1000,
        "rtf": median / (n_samples / 22050),
        "peak_mb": peak,
        "probe_gflops": rate,
        "gflop": flops / 1e9,
        "of_probe": flops / median / 1e9 / rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--what", nargs="*", default=["train", "synth"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--graph", action="store_true", help="synthesis from a CUDA graph")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=1, help="training batch")
    parser.add_argument("--frames", type=int, default=87, help="synthesis: mel frames")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = run_one(
            args.models[0],
            args.what[0],
            args.device,
            args.dtype,
            args.repeats,
            args.threads,
            args.graph,
            args.precision,
            args.batch,
            args.frames,
        )
        print(json.dumps(result))
        return
    print(
        "| model | what | device | dtype | params | median s (min) | kHz | RTF | peak MB "
        "| probe GFLOP/s | GFLOP | achieved / probe |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for what in args.what:
            command = [
                sys.executable,
                __file__,
                "--one",
                "--models",
                name,
                "--what",
                what,
                "--device",
                args.device,
                "--dtype",
                args.dtype,
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                "--precision",
                args.precision,
                "--batch",
                str(args.batch),
                "--frames",
                str(args.frames),
                *(["--graph"] if args.graph else []),
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            dtype = r["dtype"] if what == "synth" else f"{args.precision} autocast"
            dtype += " graph" if what == "synth" and args.graph else ""
            # On a GPU the probe, one small GEMM, is bound by its launch: no ceiling there.
            of_probe = f"{r['of_probe']:.0%}" if args.device == "cpu" else "n/a"
            print(
                f"| {name} | {what} | {r['device']} | {dtype} | {r['params']:,} | "
                f"{r['median_s']:.2f} ({r['min_s']:.2f}) | {r['khz']:.2f} | {r['rtf']:.2f} | "
                f"{r['peak_mb']:.0f} | {r['probe_gflops']:.0f} | {r['gflop']:.1f} | "
                f"{of_probe} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
