"""The bijection contract, checked in float64 on every layer of the package (tests/cases.py)."""

from __future__ import annotations

import pytest
import torch
from cases import CASES, Case

ATOL = 1e-8


def _prepare(name: str, seed: int = 0) -> Case:
    """Build a case in float64 with every parameter perturbed (so nothing sits at a zero init)."""
    torch.manual_seed(seed)
    case = CASES[name]()
    bij = case.bijection.double()
    x = case.x.double()
    context = case.context
    if context is not None and context.is_floating_point():
        context = context.double()
    with torch.no_grad():
        bij.train()
        bij(x, context)  # data-dependent initialisation, where a layer has one
        for p in bij.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bij.eval()
    return Case(bij, x, context, case.dead)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return _prepare(request.param)


def test_outputs_are_finite(case: Case) -> None:
    z, logdet = case.bijection(case.x, case.context)
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all()
    assert logdet.shape == (case.x.shape[0],)


def test_round_trip_and_logdets_cancel(case: Case) -> None:
    z, ld_forward = case.bijection(case.x, case.context)
    x, ld_inverse = case.bijection.inverse(z, case.context)
    assert torch.allclose(x, case.x, atol=ATOL, rtol=0)
    assert torch.allclose(ld_forward + ld_inverse, torch.zeros_like(ld_forward), atol=ATOL)


def test_logdet_matches_autograd_jacobian(case: Case) -> None:
    x0 = case.x[:1]
    c0 = None if case.context is None else case.context[:1]
    assert x0.numel() <= 64

    def flat_map(flat: torch.Tensor) -> torch.Tensor:
        z, _ = case.bijection(flat.reshape(x0.shape), c0)
        return z.reshape(-1)

    jacobian = torch.autograd.functional.jacobian(flat_map, x0.reshape(-1))
    expected = torch.linalg.slogdet(jacobian).logabsdet
    _, logdet = case.bijection(x0, c0)
    assert torch.allclose(logdet[0], expected, atol=1e-8, rtol=1e-8)


def test_gradients_reach_every_parameter(case: Case) -> None:
    if not list(case.bijection.parameters()):
        pytest.skip("no parameters")
    z, logdet = case.bijection(case.x, case.context)
    (z.square().sum() - logdet.sum()).backward()
    for name, p in case.bijection.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        if name not in case.dead:
            assert p.grad.abs().sum() > 0, f"{name} gets a zero gradient"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip(name: str) -> None:
    source = _prepare(name, seed=0)
    target = _prepare(name, seed=1)
    target.bijection.load_state_dict(source.bijection.state_dict())
    target.bijection.train()  # a loaded ActNorm must not re-initialise
    z_source, ld_source = source.bijection(source.x, source.context)
    z_target, ld_target = target.bijection(source.x, source.context)
    assert torch.allclose(z_source, z_target, atol=ATOL)
    assert torch.allclose(ld_source, ld_target, atol=ATOL)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_in_float32(name: str, device: str) -> None:
    case = _prepare(name)
    bijection = case.bijection.float().to(device)
    x = case.x.float().to(device)
    context = case.context
    if context is not None:
        context = (context.float() if context.is_floating_point() else context).to(device)
    z, ld_forward = bijection(x, context)
    x_back, ld_inverse = bijection.inverse(z, context)
    assert z.dtype == torch.float32 and z.device.type == device
    assert torch.allclose(x_back, x, atol=1e-4)
    assert torch.allclose(ld_forward, -ld_inverse, atol=1e-4)
