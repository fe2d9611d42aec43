"""Image flows: round trips, causality, caches, guidance, Jacobi, bits per dim, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sharedflow.layers.autoregressive import AffineAutoregressive, CausalNet, replayed_positions
from sharedflow.models import ImageFlow, glow, nanoflow_glow, tarflow
from sharedflow.models.image import Jacobi, Sampling
from sharedflow.nets.transformer import CausalTransformer, Guidance
from sharedflow.sharing import deploy

TINY: dict[str, Callable[[], ImageFlow]] = {
    "tarflow": lambda: tarflow(8, 3, 2, 64, 3, 1, num_classes=3),
    "tarflow-shift-only": lambda: tarflow(8, 3, 2, 64, 2, 1, affine=False),
    "tarflow-shared": lambda: tarflow(8, 3, 2, 64, 2, 1, sharing="shared"),
    "tarflow-decomposed": lambda: tarflow(8, 3, 2, 64, 3, 1, num_classes=3, sharing="decomposed"),
    "nanoflow-tarflow": lambda: tarflow(
        8, 3, 2, 64, 3, 1, num_classes=3, sharing="nanoflow", embedding_dim=8
    ),
    "glow": lambda: glow(8, 3, 2, 2, 16),
    "glow-classes": lambda: glow(8, 3, 2, 2, 16, num_classes=3),
    "glow-large": lambda: nanoflow_glow(8, 3, 2, 2, 16, 2, sharing="independent"),
    "nanoflow-glow-naive": lambda: nanoflow_glow(8, 3, 2, 2, 16, 2, sharing="shared"),
    "nanoflow-glow-decomp": lambda: nanoflow_glow(8, 3, 2, 2, 16, 2, sharing="decomposed"),
    "nanoflow-glow": lambda: nanoflow_glow(8, 3, 2, 2, 16, 2, sharing="nanoflow"),
    "nanoflow-glow-classes": lambda: nanoflow_glow(
        8, 3, 2, 2, 16, 2, sharing="nanoflow", num_classes=3
    ),
}


def _tiny(name: str, dtype: torch.dtype = torch.float64) -> ImageFlow:
    torch.manual_seed(0)
    model = TINY[name]().to(dtype)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    model.train()
    with torch.no_grad():
        model((images, torch.zeros(4, dtype=torch.long)))  # ActNorm initialisation
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_image_flow_round_trips_in_float64(name: str) -> None:
    model = _tiny(name)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) - 0.5
    labels = torch.tensor([0, 2]) if model.num_classes else None
    z, logdet = model.flow(x, labels)
    assert z.shape == x.shape
    back, inverse_logdet = model.flow.transform.inverse(z, labels)
    assert torch.allclose(back, x, atol=1e-8)
    assert torch.allclose(logdet, -inverse_logdet, atol=1e-8)


@pytest.mark.parametrize("name", sorted(TINY))
def test_deploy_form_gives_the_same_likelihood(name: str) -> None:
    model = _tiny(name)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) - 0.5
    assert torch.allclose(deploy(model).log_prob(x), model.log_prob(x), atol=1e-9)


@pytest.mark.parametrize("name", sorted(TINY))
def test_sample_writes_valid_images(name: str) -> None:
    model = _tiny(name, torch.float32)
    labels = torch.tensor([0, 1, 2, 0]) if model.num_classes else None
    images = model.sample(4, labels, temperature=0.7)
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8


@pytest.mark.parametrize("name", ["tarflow", "nanoflow-tarflow"])
def test_kv_cached_inverse_equals_the_uncached_one(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny(name)
    z = 0.5 * torch.randn(2, 3, 8, 8, dtype=torch.float64)  # random weights: keep x moderate
    labels = torch.tensor([1, 2])
    for context in (labels, _guided(labels, 1.5), _guided(labels, 2.0, annealed=True)):
        cached, _ = model.flow.transform.inverse(z, context)
        with monkeypatch.context() as patch:
            patch.setattr(CausalTransformer, "init_cache", CausalNet.init_cache)
            patch.setattr(CausalTransformer, "step", CausalNet.step)
            uncached, _ = model.flow.transform.inverse(z, context)
        assert torch.isfinite(cached).all()
        assert torch.allclose(cached, uncached, atol=1e-8)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs CUDA"))],
)  # fmt: skip
@pytest.mark.parametrize("name", ["tarflow", "tarflow-shift-only", "nanoflow-tarflow"])
def test_the_replayed_inverse_equals_the_kv_cached_one(name: str, device: str) -> None:
    """``replayed_positions``: the position a tensor, attention over the whole cache under a
    mask (on CUDA, one graph replayed per position) gives the KV-cached inverse's images and
    log-determinants, with guidance and its ramp too."""
    model = _tiny(name).to(device)
    z = 0.5 * torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device)
    labels = torch.tensor([1, 2], device=device) if model.num_classes else None
    contexts = [labels, _guided(labels, 2.0, annealed=True), _guided(None, 1.0, attn_temp=0.5)]
    for context in contexts:
        cached, cached_logdet = model.flow.transform.inverse(z, context)
        with replayed_positions(model) as replaying:
            replayed, replayed_logdet = replaying.flow.transform.inverse(z, context)
        torch.testing.assert_close(replayed, cached, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(replayed_logdet, cached_logdet, atol=1e-9, rtol=1e-9)
    layers = [m for m in model.modules() if isinstance(m, AffineAutoregressive)]
    assert layers and not any(layer.replay for layer in layers)  # restored


@pytest.mark.parametrize("name", ["tarflow", "tarflow-shift-only", "nanoflow-tarflow"])
def test_the_scanned_inverse_equals_the_kv_cached_one(name: str) -> None:
    """``AffineAutoregressive.scan`` (how sampling is exported): the token loop as one scan,
    keys and values carried functionally, gives the KV-cached inverse's images and
    log-determinants, with guidance and its ramp too."""
    model = _tiny(name)
    z = 0.5 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([1, 2]) if model.num_classes else None
    layers = [m for m in model.modules() if isinstance(m, AffineAutoregressive)]
    contexts = [labels, _guided(labels, 2.0, annealed=True), _guided(None, 1.0, attn_temp=0.5)]
    for context in contexts:
        cached, cached_logdet = model.flow.transform.inverse(z, context)
        for layer in layers:
            layer.scan = True
        scanned, scanned_logdet = model.flow.transform.inverse(z, context)
        for layer in layers:
            layer.scan = False
        torch.testing.assert_close(scanned, cached, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(scanned_logdet, cached_logdet, atol=1e-9, rtol=1e-9)


def _guided(labels: torch.Tensor, weight: float, **options: object) -> Guidance:
    return Guidance(labels, weight, **options)


def test_guidance_changes_samples_and_attention_temperature_guides_unconditional() -> None:
    model = _tiny("tarflow")
    z = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1])
    plain, _ = model.flow.transform.inverse(z, labels)
    guided, _ = model.flow.transform.inverse(z, _guided(labels, 2.0))
    temp, _ = model.flow.transform.inverse(z, _guided(labels, 1.0, attn_temp=0.5))
    assert not torch.allclose(plain, guided) and not torch.allclose(plain, temp)


def test_transformer_flow_is_causal_over_tokens() -> None:
    model = _tiny("tarflow")
    block = model.flow.transform.layers[1]  # the first autoregressive block (identity order)
    x = torch.randn(2, 16, 12, dtype=torch.float64)
    z, _ = block(x)
    for t in range(16):
        x2 = x.clone()
        x2[:, t] += 1.0
        z2, _ = block(x2)
        assert torch.equal(z2[:, :t], z[:, :t])
        assert not torch.equal(z2[:, t], z[:, t])


@pytest.mark.parametrize("chunk", [None, 4])
def test_jacobi_inverse_matches_the_sequential_one(chunk: int | None) -> None:
    model = _tiny("tarflow")
    labels = torch.tensor([0, 2])
    torch.manual_seed(3)
    sequential = model.generate(2, labels).images
    torch.manual_seed(3)
    result = model.generate(2, labels, jacobi=Jacobi(tol=1e-10, chunk=chunk))
    assert torch.equal(result.images, sequential)
    blocks = 3
    assert len(result.iterations) == blocks
    assert all(sum(n) <= 16 for n in result.iterations)  # T tokens at most


def test_jacobi_with_a_loose_tolerance_stops_early_within_it() -> None:
    model = _tiny("tarflow")
    z = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    from sharedflow.layers.solve import jacobi_inverse

    exact, _ = model.flow.transform.inverse(z, None)
    approx, iterations = jacobi_inverse(model.flow.transform, z, None, tol=1e-3)
    assert (approx - exact).abs().max() < 0.05
    assert sum(map(sum, iterations)) < 3 * 15


def test_bits_per_dim_follow_the_tarflow_evaluation() -> None:
    model = _tiny("tarflow")
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(5)
    bpd = model.evaluate_batch((images, torch.zeros(3, dtype=torch.long)))["bpd"]
    torch.manual_seed(5)
    u = images.double()
    x = (u + torch.rand_like(u)) / 256 * 2 - 1  # (x_int + U) / 256 * 2 - 1
    z, logdet = model.flow(x, None)
    d = 3 * 8 * 8
    log_p = (-0.5 * (z**2 + math.log(2 * math.pi))).flatten(1).sum(1) - d * math.log(128)
    reference = (-log_p / d - logdet / d) / math.log(2)
    assert torch.allclose(bpd, reference, atol=1e-6)


def test_denoising_moves_samples_up_the_density() -> None:
    model = _tiny("tarflow")
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64) * 2 - 1
    cleaned = model.denoise(x, None, sigma=0.01)
    assert (model.log_prob(cleaned) > model.log_prob(x)).all()


def test_image_bad_inputs_are_clear_errors() -> None:
    model = _tiny("tarflow", torch.float32)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        model.sample(2, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        model.log_prob(torch.zeros(2, 3, 8, 8), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="expected images of shape"):
        model((torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ValueError, match="unconditional"):
        _tiny("glow", torch.float32).sample(2, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not a multiple of the patch"):
        tarflow(10, 3, 4, 64, 2, 1)
    with pytest.raises(ValueError, match="cannot be squeezed"):
        glow(12, 3, 3, 2, 16)


def test_npy_images_use_their_labels_file_and_refuse_bad_labels(tmp_path: Path) -> None:
    import numpy as np

    from sharedflow.data.images import ImageError
    from sharedflow.data.splits import images

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8))
    np.save(tmp_path / "y.npy", np.arange(40) % 4)
    data = images(
        "npy", str(tmp_path / "x.npy"), image_size=8, n_val=8, labels=str(tmp_path / "y.npy")
    )
    assert sorted({int(data.train[(i, 0)][1]) for i in range(len(data.train))}) == [0, 1, 2, 3]
    np.save(tmp_path / "bad.npy", np.arange(40) - 1)
    with pytest.raises(ImageError, match="non-negative integer labels"):
        images("npy", str(tmp_path / "x.npy"), image_size=8, labels=str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        glow(image_size=8, num_classes=2)(
            (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 3]))
        )


@pytest.mark.parametrize("name", ["glow-classes", "nanoflow-glow-classes"])
def test_a_conditional_glow_reads_its_labels_and_a_dropped_label_is_the_mean(name: str) -> None:
    model = _tiny(name)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64) - 0.5
    by_class = [model.log_prob(x, torch.full((3,), c)) for c in range(3)]
    assert not torch.allclose(by_class[0], by_class[1])
    # y = -1 and no labels are one branch: every class row replaced by the mean of the rows
    dropped = model.log_prob(x, torch.full((3,), -1))
    assert torch.allclose(dropped, model.log_prob(x, None))
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "class_table", None) is not None:
                module.class_table.copy_(
                    module.class_table.mean(0, keepdim=True).expand_as(module.class_table)
                )
    assert torch.allclose(model.log_prob(x, torch.full((3,), 2)), dropped)


def _reference_block_output(
    net: CausalTransformer, x: torch.Tensor, labels: torch.Tensor | None, attn_temp: float
) -> torch.Tensor:
    """ml-tarflow's ``MetaBlock`` body spelled out: ``proj_in(x) + pos + class term``, pre-LN
    layers with causal attention at scale ``64^-1/2 / attn_temp``, ``proj_out``. No labels: the
    mean class embedding."""
    b, t, _ = x.shape
    classes = net.class_embed[:, 0]
    term = classes.mean(0) if labels is None else classes[labels][:, None]
    h = F.linear(x, net.proj_in.weight, net.proj_in.bias) + net.pos_embed + term
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in net.layers:
        y = F.layer_norm(h, (h.shape[-1],), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
        q, k, v = F.linear(y, layer.attn.qkv.weight, layer.attn.qkv.bias).chunk(3, dim=-1)
        q, k, v = (a.reshape(b, t, -1, 64).transpose(1, 2) for a in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) * 64**-0.5 / attn_temp
        attn = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        h = h + F.linear(
            attn.transpose(1, 2).reshape(b, t, -1), layer.attn.proj.weight, layer.attn.proj.bias
        )
        y = F.layer_norm(h, (h.shape[-1],), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
        h = h + layer.mlp[2](F.gelu(layer.mlp[0](y)))
    return F.linear(h, net.proj_out.weight, net.proj_out.bias)


@pytest.mark.parametrize(("attn_temp", "annealed"), [(1.0, False), (0.5, False), (0.5, True)])
def test_guidance_matches_tarflow_reverse_for_a_class_conditional_model(
    attn_temp: float, annealed: bool
) -> None:
    """``MetaBlock.reverse``: ``h_c + w (h_c - h_u)``, where the unconditional branch reads no
    label (the mean class embedding) at the guidance's attention temperature, whatever the
    labels of the conditional branch, in the full pass and the KV-cache pass alike; annealed,
    ``w (i + 1) / (T - 1)`` at position ``i``."""
    torch.manual_seed(0)
    net = CausalTransformer(6, 64, 5, 2, num_classes=3, n_out=12).double()
    for p in net.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    labels = torch.tensor([2, 0])
    guidance = Guidance(labels, weight=1.5, attn_temp=attn_temp, annealed=annealed)
    conditional = _reference_block_output(net, x, labels, 1.0)
    unconditional = _reference_block_output(net, x, None, attn_temp)
    weight = 1.5 * (torch.arange(1, 6, dtype=x.dtype).view(5, 1) / 4 if annealed else 1.0)
    expected = conditional + weight * (conditional - unconditional)
    with torch.no_grad():
        assert torch.allclose(net(x, guidance), expected, atol=1e-10)
        cache = net.init_cache(x, guidance)
        steps = torch.cat([net.step(cache, x[:, i : i + 1], i) for i in range(5)], dim=1)
    assert torch.allclose(steps, expected, atol=1e-10)


def test_the_recipes_sampling_is_the_default_and_arguments_override_it() -> None:
    torch.manual_seed(0)
    model = tarflow(8, 3, 2, 64, 2, 1, 3, noise_std=0.5, sampling=Sampling(0.5, True, 1.5))
    with torch.no_grad():
        for p in model.parameters():  # away from the identity the zero heads start at
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    labels = torch.tensor([0, 1])

    def draw(**options: object) -> torch.Tensor:
        torch.manual_seed(1)
        return model.sample(2, labels, **options)

    default = draw()
    assert torch.equal(default, draw(temperature=0.5, denoise=True, guidance=1.5))
    for changed in [{"temperature": 1.0}, {"denoise": False}, {"guidance": 0.0}]:
        assert not torch.equal(default, draw(**changed)), changed
    assert Sampling(0.7, True, 2.0).describe() == "T 0.7, guidance 2, denoised"


def test_a_sampling_the_model_cannot_do_is_refused_when_it_is_built() -> None:
    with pytest.raises(ValueError, match="no Transformer estimator to guide"):
        glow(8, 3, 2, 2, 16, sampling={"guidance": 2.0})
    with pytest.raises(ValueError, match="temperature must be finite"):
        Sampling(float("nan"))


def test_showcase_puts_one_class_per_row_beside_samples_of_it(tmp_path: Path) -> None:
    images = torch.arange(10, dtype=torch.uint8)[:, None, None, None].expand(10, 3, 8, 8)
    labels = [2, 0, 2, 1, 0, 2, 2, 2, 0, 1]
    items = list(zip(images, labels, strict=True))
    model = tarflow(8, 3, 2, 64, 2, 1, 3).eval()
    real, asked = model.showcase(items, n=9)  # rows of 3: classes 2, 0, 1 in order of appearance
    assert asked.tolist() == [2, 2, 2, 0, 0, 0, 1, 1]
    assert real[:, 0, 0, 0].tolist() == [0, 2, 5, 1, 4, 8, 3, 9]
    real, asked = glow(8, 3, 2, 2, 16).showcase(items, n=4)
    assert asked is None and real[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    (path,) = model.write_samples(tmp_path, "grid", items)
    with Image.open(path) as image:
        assert image.size[0] > image.size[1]  # two panels side by side
