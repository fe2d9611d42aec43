"""Properties the contract cannot see: layouts, causality, caches, ActNorm init, units."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cases import _head, _wavenet

import sharedflow as sf
from sharedflow.layers.autoregressive import CausalNet
from sharedflow.nets import WaveNet2D


def test_group_fold_matches_waveglow_unfold() -> None:
    x = torch.arange(32.0).reshape(2, 16)
    z, _ = sf.GroupFold(8)(x)
    assert torch.equal(z, x.unfold(1, 8, 8).permute(0, 2, 1))
    assert z[0, 3, 1] == 8 * 1 + 3


def test_fold_2d_runs_consecutive_samples_down_columns() -> None:
    x = torch.arange(32.0).reshape(1, 32)
    z, _ = sf.Fold2d(4)(x)
    assert z.shape == (1, 1, 4, 8)
    assert z[0, 0, :, 2].tolist() == [8.0, 9.0, 10.0, 11.0]


def test_squeeze_channel_order_is_glows() -> None:
    x = torch.randn(1, 3, 4, 4)
    z, _ = sf.Squeeze2d(2)(x)
    c, dy, dx = 2, 1, 0
    assert torch.equal(z[0, c * 4 + dy * 2 + dx], x[0, c, dy::2, dx::2])


def test_patchify_matches_unfold() -> None:
    x = torch.randn(2, 3, 8, 8)
    z, _ = sf.Patchify(4, 3, 8, 8)(x)
    assert torch.equal(z, F.unfold(x, kernel_size=4, stride=4).transpose(1, 2))


def test_patchify_rejects_wrong_image_size() -> None:
    with pytest.raises(ValueError, match="expected images"):
        sf.Patchify(4, 3, 8, 8)(torch.randn(1, 3, 8, 12))


def test_bipartize_is_the_papers_permutation_b() -> None:
    assert sf.bipartize(16).indices.tolist() == [*range(7, -1, -1), *range(15, 7, -1)]


def test_permutation_moves_an_aligned_context() -> None:
    flip = sf.reverse(4, dim=2, context_dim=2)
    mel = torch.randn(1, 3, 4, 5)
    assert torch.equal(flip.forward_context(mel), mel.flip(2))
    assert torch.equal(flip.inverse_context(flip.forward_context(mel)), mel)


@pytest.mark.parametrize("wrapper", ["input", "output"])
def test_autoregressive_transform_is_causal(wrapper: str) -> None:
    torch.manual_seed(0)
    net = _head(_wavenet(dilations=[1, 2, 1]))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    conditioner = sf.ShiftedInput(net) if wrapper == "input" else sf.ShiftedOutput(net, 2)
    flow = sf.AffineAutoregressive(conditioner).double()
    x, mel = torch.randn(2, 1, 6, 5).double(), torch.randn(2, 3, 6, 5).double()
    z, _ = flow(x, mel)
    for t in range(6):
        x2 = x.clone()
        x2[:, :, t] += 1.0
        z2, _ = flow(x2, mel)
        assert torch.equal(z2[:, :, :t], z[:, :, :t]), f"row {t} leaks backwards"
        assert not torch.equal(z2[:, :, t], z[:, :, t])
        if t < 5:
            assert not torch.equal(z2[:, :, t + 1 :], z[:, :, t + 1 :]), "no dependence at all"


@pytest.mark.parametrize(
    ("dilations", "kernel_size"), [([1, 1, 1], 3), ([1, 2, 4], 3), ([2, 1, 3], 3), ([1, 2, 1], 5)]
)
def test_wavenet2d_row_cache_equals_full_forward(dilations: list[int], kernel_size: int) -> None:
    """13 rows: every layer's rings wrap around at least once."""
    torch.manual_seed(0)
    net = WaveNet2D(1, 3, 4, 3, dilations, kernel_size).double()
    x, mel = torch.randn(2, 1, 13, 9).double(), torch.randn(2, 3, 13, 9).double()
    full = net(x, mel)
    cache = net.init_cache(x, mel)
    reference_cache = CausalNet.init_cache(net, x, mel)
    for i in range(13):
        row = net.step(cache, x[:, :, i : i + 1], i)
        reference = CausalNet.step(net, reference_cache, x[:, :, i : i + 1], i)
        assert torch.allclose(row, full[:, :, i : i + 1], atol=1e-12)
        assert torch.allclose(reference, full[:, :, i : i + 1], atol=1e-12)


def test_one_column_wavenet2d_row_steps_equal_the_full_forward() -> None:
    """Width kernel 1 (a one-column WaveFlow): each row's conv is one GEMM of the window."""
    torch.manual_seed(0)
    net = WaveNet2D(1, 3, 4, 3, [1, 2, 4], width_kernel=1).double()
    assert net.convs[0].weight.shape[-2:] == (3, 1)
    for width in (1, 2):
        x, mel = torch.randn(2, 1, 13, width).double(), torch.randn(2, 3, 13, width).double()
        full = net(x, mel)
        cache = net.init_cache(x, mel)
        for i in range(13):
            row = net.step(cache, x[:, :, i : i + 1], i)
            assert torch.allclose(row, full[:, :, i : i + 1], atol=1e-12)


def test_wavenet2d_width_dilations_wider_than_the_input_equal_the_padded_conv() -> None:
    """Width 3, width dilations 1..8: layers 2 and 3 take the centre-column conv, which must
    equal the zero-padded dilated conv, in the full pass and row by row."""
    torch.manual_seed(0)
    net = WaveNet2D(1, 3, 4, 4, [1, 2, 1, 2]).double()
    x, mel = torch.randn(2, 1, 6, 3).double(), torch.randn(2, 3, 6, 3).double()
    fast = net(x, mel)

    def padded(layer: int, r: torch.Tensor) -> torch.Tensor:
        d, w = net.height_dilations[layer], net.width_dilations[layer]
        return net.convs[layer](F.pad(r, (w, w, 2 * d, 0)))

    net._conv = padded
    assert torch.allclose(fast, net(x, mel), atol=1e-12)
    cache = net.init_cache(x, mel)
    for i in range(6):
        assert torch.allclose(net.step(cache, x[:, :, i : i + 1], i), fast[:, :, i : i + 1])


def test_actnorm_initialises_from_data_once_and_the_flag_is_saved() -> None:
    layer = sf.ActNorm(3)
    x = torch.randn(64, 3, 4, 4) * 3 + 2
    z, _ = layer(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    fresh = sf.ActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)
    z2, _ = fresh(torch.randn(64, 3, 4, 4))
    assert torch.equal(fresh.bias, layer.bias)


def test_invconv_logdet_stays_finite_when_det_is_negative() -> None:
    layer = sf.InvertibleConv1x1(3)
    with torch.no_grad():
        layer.weight[0] = -layer.weight[0]
    assert torch.linalg.det(layer.weight) < 0
    assert torch.isnan(torch.logdet(layer.weight))
    _, logdet = layer(torch.randn(2, 3, 5))
    assert torch.isfinite(logdet).all()


def test_invconv_starts_as_a_rotation() -> None:
    w = sf.InvertibleConv1x1(6).weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(6), atol=1e-5)
    assert torch.linalg.det(w) > 0


def test_standard_normal_log_prob_and_temperature() -> None:
    base = sf.StandardNormal((3,))
    z = torch.zeros(2, 3)
    assert torch.allclose(base.log_prob(z), torch.full((2,), -1.5 * math.log(2 * math.pi)))
    torch.manual_seed(0)
    assert base.sample(20000, temperature=0.5).std().item() == pytest.approx(0.5, rel=0.02)
    with pytest.raises(ValueError, match="event_shape"):
        sf.StandardNormal().sample(3)


def test_diagonal_gaussian_matches_torch_distributions() -> None:
    base = sf.DiagonalGaussian((4,))
    with torch.no_grad():
        base.loc.normal_()
        base.log_scale.normal_()
    z = torch.randn(5, 4)
    expected = torch.distributions.Normal(base.loc, base.log_scale.exp()).log_prob(z).sum(1)
    assert torch.allclose(base.log_prob(z), expected, atol=1e-5)


def test_bits_per_dim_matches_tarflow_and_glow_forms() -> None:
    log_prob, dims = torch.tensor([-1000.0]), 300
    tarflow = -(log_prob - dims * math.log(128)) / (dims * math.log(2))
    assert torch.allclose(sf.bits_per_dim(log_prob, dims, 8, 2.0), tarflow)
    glow = -log_prob / (dims * math.log(2)) + 8
    assert torch.allclose(sf.bits_per_dim(log_prob, dims, 8, 1.0), glow)
    assert torch.allclose(sf.nll_per_dim(log_prob, dims), torch.tensor([1000.0 / 300]))


class _Fixed(torch.nn.Module):
    """A conditioner that ignores its input and returns a fixed ``h``."""

    def __init__(self, h: torch.Tensor) -> None:
        super().__init__()
        self.h = h

    def forward(self, x: torch.Tensor, context: object = None) -> torch.Tensor:
        return self.h


@pytest.mark.parametrize(
    ("param", "formula"),
    [
        (sf.ExpAffine(), lambda x, s, t: x * torch.exp(s) + t),
        (sf.ExpAffine(clamp=1.5), lambda x, s, t: x * torch.exp(1.5 * torch.tanh(s / 1.5)) + t),
        (sf.SigmoidAffine("shift_scale"), lambda x, s, t: (x + t) * torch.sigmoid(s + 2)),
        (sf.InverseAffine(), lambda x, s, t: (x - t) * torch.exp(-s)),
    ],
)
def test_parameterisations_follow_the_published_formulas(param, formula) -> None:  # noqa: ANN001
    x, s, t = torch.randn(3, 2, 4), 2 * torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    h = torch.cat([t, s] if param.order == "shift_scale" else [s, t], dim=1)
    coupling = sf.AffineCoupling(_Fixed(h), n_a=1, param=param)
    z, _ = coupling(torch.cat([torch.zeros(3, 1, 4), x], dim=1))
    assert torch.allclose(z[:, 1:], formula(x, s, t), atol=1e-5)


def test_interleaved_order_reads_even_channels_as_shift() -> None:
    s, t = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    h = torch.stack([t, s], dim=2).reshape(1, 4, 3)  # t0 s0 t1 s1
    log_scale, shift = sf.InverseAffine("interleaved")(h, 1)
    assert torch.allclose(log_scale, -s) and torch.allclose(shift, -t * torch.exp(-s))
