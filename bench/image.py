"""Image-flow benchmarks with the shapes of shared/reference/image.md section f.

TarFlow small: 3x32x32 images, patch 4 (T = 64, D = 48), 256 channels, 4 blocks x 2 layers,
affine, batch 8, x ~ U[-1, 1] + 0.05 N(0, 1). Glow: batch 8 in [-0.5, 0.5), L = 3, affine,
LU, learned top. Median (min) in ms over --repeats runs after two warm-ups (README-size Glow:
3 runs, 1 warm-up). Prints a Markdown table.

    python bench/image.py
    python bench/image.py --device cuda
    python bench/image.py --device cuda --preset imagenet64 --precision bf16 --batch 16
    python bench/image.py --round-robin   # the side-by-side harness's order of runs
    python bench/image.py --device cuda --graph   # sampling from CUDA graphs

Consecutive runs of one case (the default) time it with a warm cache and allocator; the
harness (``shared/reference/bench/ref_bench_image.py``) times its cases in rounds, so each run
follows different work. The KV-cache samplers, made of many small kernels, are ~1.4x slower
that way; ``--round-robin`` reproduces the harness's figures.

``--graph``: TarFlow's KV-cache sampling replays each position from a CUDA graph
(``sharedflow.layers.autoregressive.replayed_positions``; on a CPU the same tensor-position
steps run eagerly).

``--preset imagenet64``: TarFlow at the ImageNet-64 recipe's width (patch 2, 768 channels,
8 blocks x 8 layers, 460M parameters), training fwd+bwd and KV-cache sampling only, reported
also as images per second; ``--precision`` runs both under autocast. Sampling is timed on one
of the eight blocks (its 1024 positions), and its images/s counts a run as an eighth of a batch.

The training cases, which are compute-bound, also report their GFLOP (torch's FLOP counter)
and the rate achieved as a fraction of a GEMM probe in the run's dtype, measured before and
after each group: TarFlow's MLP product over the batch's tokens, ``(8 x 64, 256) @ (256, 1024)``
for the small preset and ``(B x 1024, 768) @ (768, 3072)`` for ImageNet-64.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import count_flops, describe, gemm_rate, sync

from sharedflow.layers.autoregressive import AffineAutoregressive
from sharedflow.models import glow, tarflow
from sharedflow.models.image import Jacobi
from sharedflow.precision import autocast


def _time(
    fn: Callable[[], object], repeats: int, warmup: int, device: torch.device
) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _time_round_robin(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """The side-by-side harness's protocol: every case once per round (A, B, C, A, B, C, ...),
    so each timed run follows the other cases' work, not a warm copy of itself."""
    for fn in cases.values():
        _time(fn, 0, warmup, device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name] += _time(fn, 1, 0, device)
    return times


def tarflow_cases(device: torch.device) -> dict[str, Callable[[], object]]:
    """TarFlow small with the weights of the side-by-side harness (``ref_bench_image.py``), so
    that both protocols time the same models: the unconditional model's output projections
    drawn from N(0, 0.02^2) (their zero init would make every layer the identity), the
    conditional model at its init."""
    from sharedflow.nets.transformer import CausalTransformer

    torch.manual_seed(0)
    uncond = tarflow(32, 3, 4, 256, 4, 2).to(device)
    for module in uncond.modules():
        if isinstance(module, CausalTransformer) and module.proj_out is not None:
            torch.nn.init.normal_(module.proj_out.weight, std=0.02)
    torch.manual_seed(0)
    cond = tarflow(32, 3, 4, 256, 4, 2, num_classes=10).to(device)
    x = ((torch.rand(8, 3, 32, 32) * 2 - 1) + 0.05 * torch.randn(8, 3, 32, 32)).to(device)
    labels = torch.arange(8, device=device)
    optimizer = torch.optim.AdamW(uncond.parameters(), lr=1e-4)

    def fwd_bwd() -> None:
        uncond.zero_grad(set_to_none=True)
        (-uncond.log_prob(x).mean() / uncond.n_dims).backward()

    def step() -> None:
        fwd_bwd()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            uncond.log_prob(x)

    return {
        "tarflow train fwd+bwd": fwd_bwd,
        "tarflow train step incl. AdamW": step,
        "tarflow forward, no_grad (likelihood)": forward,
        "tarflow denoise step (fwd + grad wrt x)": lambda: uncond.denoise(x, None, 0.05),
        "tarflow sample, uncond, KV cache": lambda: uncond.sample(8),
        "tarflow sample, cond, no guidance": lambda: cond.sample(8, labels.cpu()),
        "tarflow sample, cond, CFG w=2 annealed": lambda: cond.sample(
            8, labels.cpu(), guidance=2.0, annealed=True
        ),
        "tarflow sample, uncond, attn_temp=0.5 w=1": lambda: uncond.sample(
            8, guidance=1.0, attn_temp=0.5
        ),
        "tarflow sample, uncond, Jacobi tol 1e-3": lambda: uncond.sample(8, jacobi=Jacobi(1e-3)),
        "tarflow sample, uncond, GS-Jacobi chunk 16, tol 1e-3": lambda: uncond.sample(
            8, jacobi=Jacobi(1e-3, None, 16)
        ),
    }


def glow_cases(device: torch.device, hidden: int, n_steps: int) -> dict[str, Callable]:
    torch.manual_seed(0)
    model = glow(32, 3, 3, n_steps, hidden).to(device)
    x = (torch.rand(8, 3, 32, 32) - 0.5).to(device)
    with torch.no_grad():
        model.train()
        model.log_prob(x)  # ActNorm initialisation
    name = f"glow h{hidden} K{n_steps}"

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        (-model.log_prob(x + torch.rand_like(x) / 256).mean()).backward()

    return {f"{name} train fwd+bwd": fwd_bwd, f"{name} sample": lambda: model.sample(8)}


def imagenet64_cases(
    device: torch.device, batch: int
) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """The cases, and the images one run of each stands for. Sampling is timed on the first
    of the eight blocks, which all have the same shapes and work: a run is an eighth of a
    batch's sampling (the patchify and the base draw, which the full sample adds, are
    negligible beside 8 x 1024 positions of 8 layers)."""
    torch.manual_seed(0)
    model = tarflow(64, 3, 2, 768, 8, 8).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = (torch.rand(batch, 3, 64, 64, device=device) * 2 - 1).clamp(-1, 1)
    blocks = [m for m in model.modules() if isinstance(m, AffineAutoregressive)]
    z = torch.randn(batch, 1024, 12, device=device)  # (B, T, D): the tokens of patch 2

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        (-model.log_prob(x).float().mean() / model.n_dims).backward()

    def sample_block() -> None:
        with torch.no_grad():
            blocks[0].inverse(z)

    name = f"tarflow-imagenet64 sample, uncond, KV cache (block 1 of {len(blocks)})"
    cases = {"tarflow-imagenet64 train fwd+bwd": fwd_bwd, name: sample_block}
    return cases, {"tarflow-imagenet64 train fwd+bwd": batch, name: batch / len(blocks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", choices=["small", "imagenet64"], default="small")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=8, help="imagenet64 preset: the batch")
    parser.add_argument(
        "--graph", action="store_true", help="TarFlow sampling replayed from CUDA graphs"
    )
    parser.add_argument(
        "--round-robin",
        action="store_true",
        help="time each group's cases in rounds, as the side-by-side harness does",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    AffineAutoregressive.replay = args.graph  # every model here, as replayed_positions does
    batch = args.batch if args.preset == "imagenet64" else 8
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    shape = (batch * 1024, 768, 3072) if args.preset == "imagenet64" else (8 * 64, 256, 1024)
    graph = ""
    if args.graph:  # on a CPU the same tensor-position steps run eagerly
        graph = "; sampling replayed from CUDA graphs" if device.type == "cuda" else "; replay"
    print(f"{describe(device)}; torch {torch.__version__}; {args.precision}{graph}")
    print(f"| case ({args.device}, batch {batch}) | median ms (min) | images/s | GFLOP "
          "| probe GFLOP/s | achieved / probe |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    if args.preset == "imagenet64":
        cases, images = imagenet64_cases(device, batch)
        groups = [(cases, args.repeats, 1)]
    else:
        groups = [
            (tarflow_cases(device), args.repeats, 2),
            (glow_cases(device, 128, 8), args.repeats, 2),
            (glow_cases(device, 256, 32), 3, 1),
        ]
        images = {name: batch for cases, _, _ in groups for name in cases}
    for cases, repeats, warmup in groups:
        rate = gemm_rate(device, dtype, *shape)
        with autocast(args.precision, device):
            if args.round_robin:
                timed = _time_round_robin(cases, repeats, warmup, device)
            else:
                timed = {name: _time(fn, repeats, warmup, device) for name, fn in cases.items()}
            work = {name: count_flops(cases[name]) / 1e9 for name in cases if "train" in name}
        rate = (rate + gemm_rate(device, dtype, *shape)) / 2
        for name, times in timed.items():
            median = statistics.median(times)
            rate_images = 1000 * images[name] / median
            row = f"| {name} | {median:.1f} ({min(times):.1f}) | {rate_images:.3g} |"
            if name in work:
                achieved = work[name] / (median / 1000)
                row += f" {work[name]:.2f} | {rate:.0f} | {achieved / rate:.0%} |"
            else:
                row += " | | |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
