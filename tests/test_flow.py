"""NormalizingFlow: log_prob is the change of variables, sampling inverts it, units agree."""

from __future__ import annotations

import math

import torch

import sharedflow as sf
from sharedflow.nets import PointwiseMLP


def test_log_prob_is_base_plus_logdet_and_sampling_inverts() -> None:
    torch.manual_seed(0)
    transform = sf.Sequential(
        sf.ActNorm(2, n_spatial=0),
        sf.AffineCoupling(PointwiseMLP(1, 2, zero_init=False)),
        sf.reverse(2),
        sf.AffineCoupling(PointwiseMLP(1, 2, zero_init=False)),
    )
    flow = sf.NormalizingFlow(transform, sf.StandardNormal((2,)))
    x = torch.randn(16, 2) * 3
    z, logdet = flow(x)
    assert torch.allclose(flow.log_prob(x), flow.base.log_prob(z) + logdet)
    flow.eval()
    torch.manual_seed(1)
    sample = flow.sample(8, temperature=0.7)
    torch.manual_seed(1)
    z = 0.7 * torch.randn(8, 2)
    assert torch.allclose(transform(sample)[0], z, atol=1e-5)
    bpd = flow.bits_per_dim(x, n_bits=8, data_range=2.0)
    expected = (flow.nll_per_dim(x) + math.log(128)) / math.log(2)
    assert torch.allclose(bpd, expected)


def test_context_encoder_runs_once_per_call() -> None:
    calls = []

    class Encoder(torch.nn.Module):
        def forward(self, context: torch.Tensor, shape: torch.Size) -> torch.Tensor:
            calls.append(shape)
            return context.expand(shape[0], 1, shape[2])

    net = PointwiseMLP(1, 2, context_channels=1)
    flow = sf.NormalizingFlow(sf.AffineCoupling(net), sf.StandardNormal(), Encoder())
    flow.log_prob(torch.randn(3, 2, 5), torch.ones(1, 1, 5))
    flow.sample((3, 2, 5), torch.ones(1, 1, 5))
    assert calls == [torch.Size([3, 2, 5])] * 2
