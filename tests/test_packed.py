"""Linear maps packed for oneDNN (TarFlow's token step on a CPU): the same maps to float32
rounding, taken only where they apply, and never stale after the weights change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sharedflow.nets.transformer as transformer
from sharedflow.models import tarflow
from sharedflow.nets.packed import HAS_ONEDNN_LINEAR, PackedLinear, packable, packed_for

needs_onednn = pytest.mark.skipif(not HAS_ONEDNN_LINEAR, reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("rows", [1, 8, 16])
def test_a_packed_linear_map_equals_the_module(gelu: bool, rows: int) -> None:
    linear = nn.Linear(256, 96)
    x = torch.randn(rows, 1, 256)
    expected = nn.functional.gelu(linear(x)) if gelu else linear(x)
    torch.testing.assert_close(PackedLinear(linear, 16, gelu)(x), expected, atol=1e-5, rtol=1e-5)


def test_packing_applies_to_float32_cpu_inference_only() -> None:
    x = torch.zeros(2, 4)
    with torch.no_grad():
        assert packable(x) == HAS_ONEDNN_LINEAR
        assert not packable(x.double())
        with torch.autocast("cpu", torch.bfloat16):
            assert not packable(x)
    assert not packable(x)  # gradients asked for


@needs_onednn
def test_a_packing_is_reused_until_the_weights_change() -> None:
    linear = nn.Linear(8, 8)
    built = []

    def build() -> PackedLinear:
        built.append(PackedLinear(linear, 4))
        return built[-1]

    first = packed_for(linear, 4, build)
    assert packed_for(linear, 4, build) is first and len(built) == 1
    assert packed_for(linear, 8, build) is not first  # another row count
    with torch.no_grad():
        linear.weight.mul_(2)  # in place: the version counter moves
    x = torch.randn(3, 8)
    torch.testing.assert_close(packed_for(linear, 8, build)(x), linear(x), atol=1e-5, rtol=1e-5)
    assert len(built) == 3


@needs_onednn
def test_sampling_with_packed_weights_equals_the_plain_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Conditional TarFlow under annealed guidance: the packed token step's inverse equals the
    plain one's to float32 rounding, also after the weights change between two calls."""
    torch.manual_seed(0)
    model = tarflow(8, 3, 2, 64, 2, 2, num_classes=3).eval()
    z = 0.5 * torch.randn(4, 3, 8, 8)
    context = model.sampling_context(torch.tensor([0, 1, 2, 0]), guidance=2.0, annealed=True)
    with torch.no_grad():
        for _ in range(2):
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
            packed, packed_logdet = model.flow.transform.inverse(z, context)
            with monkeypatch.context() as patch:
                patch.setattr(transformer, "packable", lambda x: False)
                plain, plain_logdet = model.flow.transform.inverse(z, context)
            assert torch.isfinite(packed).all()
            torch.testing.assert_close(packed, plain, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(packed_logdet, plain_logdet, atol=1e-3, rtol=1e-5)
