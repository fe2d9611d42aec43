"""Converted NanoFlow image models against the published code, in one process.

Builds each of L0SG/NanoFlow's image models (Glow, Glow-large, NanoFlow-naive, -decomp and
NanoFlow) from a checkout of its ``image_density_experiments`` at a small size, perturbs every
parameter (so the zero-initialised convolutions matter), converts the state dict with
``sharedflow convert``'s maps and prints the largest relative difference of ``log p(x)``
(continuous ``x``, float64) between the two.

    python bench/glow_parity.py path/to/NanoFlow/image_density_experiments
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

from sharedflow.convert import convert_state

# (our kind, reference module, class, extra constructor arguments)
CASES = [
    ("glow", "model_glow", "Glow", {}),
    ("nanoflow-glow", "model_glow_large", "GlowLarge", {"flow_embed_dim": None}),
    ("nanoflow-glow", "model_nanoflow_naive", "NanoFlowNaive", {}),
    ("nanoflow-glow", "model_nanoflow_decomp", "NanoFlowDecomp", {}),
    ("nanoflow-glow", "model_nanoflow", "NanoFlow", {"flow_embed_dim": 2}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="NanoFlow's image_density_experiments folder")
    args = parser.parse_args()
    sys.path.insert(0, args.reference)
    gaussian_likelihood = importlib.import_module("modules").gaussian_likelihood
    torch.manual_seed(0)
    common = dict(
        image_shape=(16, 16, 3),
        hidden_channels=16,
        K=2,
        L=2,
        actnorm_scale=1.0,
        flow_permutation="invconv",
        flow_coupling="affine",
        LU_decomposed=True,
        y_classes=10,
        learn_top=True,
        y_condition=False,
    )
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64) - 0.5
    print("| reference | our sharing | max relative difference of log p(x) |")
    print("|---|---|---|")
    for kind, module, name, extra in CASES:
        reference = getattr(importlib.import_module(module), name)(**common, **extra).double()
        reference.set_actnorm_init()
        with torch.no_grad():
            for p in reference.parameters():
                p.add_(0.05 * torch.randn_like(p))
            reference.eval()
            z, objective = reference.flow(x.clone(), logdet=0.0, reverse=False)
            mean, logs = reference.prior(x)
            expected = objective + gaussian_likelihood(mean, logs, z)
            state = {k: v.float() for k, v in reference.state_dict().items()}
            ours, config = convert_state(kind, state)
            got = ours.double().flow.log_prob(x)
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        print(f"| {name} | {config.get('sharing', 'glow')} | {error:.1e} |")


if __name__ == "__main__":
    main()
