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


def test_running_variance_prior_tracks_training_latents_and_scales_samples() -> None:
    base = sf.RunningVarianceNormal((2, 3))
    z = torch.full((5, 2, 3), 2.0)
    assert torch.equal(base.log_prob(z), sf.StandardNormal((2, 3)).log_prob(z))  # unit variance
    assert torch.allclose(base.var, torch.full((2, 3), 1.3))  # 1 + 0.1 (4 - 1)
    base.eval()
    base.log_prob(10 * z)
    assert torch.allclose(base.var, torch.full((2, 3), 1.3))  # no update outside training
    base.var.fill_(4.0)
    torch.manual_seed(0)
    assert abs(base.sample(20_000).std().item() - 2.0) < 0.05
    # TarFlow's shift-only variant trains it; the affine one keeps a unit prior.
    from sharedflow.models import tarflow

    model = tarflow(8, 3, 2, 64, 2, 1, affine=False)
    assert isinstance(model.flow.base, sf.RunningVarianceNormal)
    model.train()((torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), None))
    assert not torch.allclose(model.flow.base.var, torch.ones(3, 8, 8))
    assert type(tarflow(8, 3, 2, 64, 2, 1).flow.base) is sf.StandardNormal
