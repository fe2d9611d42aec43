"""NanoFlow sharing: counts equal their formulas, sharing is real, deploy folding is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import sharedflow as sf
from sharedflow.nets import WaveNet2D, ZeroConv
from sharedflow.sharing import SHARING_MODES, build_estimators, count_parameters, deploy

K, R, LAYERS, EMB, MEL = 4, 6, 3, 5, 3


def make_net(embedding_dim: int) -> WaveNet2D:
    return WaveNet2D(1, MEL, channels=R, n_layers=LAYERS, embedding_dim=embedding_dim)


def make_head(k: int = 0) -> ZeroConv:
    return ZeroConv(R, 2, init_range=0.1)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_flow(mode: str) -> sf.NormalizingFlow:
    estimators = build_estimators(K, make_net, make_head, mode, EMB)
    layers: list[sf.Bijection] = []
    for estimator in estimators:
        layers += [
            sf.AffineAutoregressive(sf.ShiftedInput(estimator)),
            sf.reverse(4, dim=2, context_dim=2),
        ]
    return sf.NormalizingFlow(sf.Sequential(layers), sf.StandardNormal())


def randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("mode", SHARING_MODES)
def test_parameter_count_equals_its_formula(mode: str) -> None:
    body, body_emb, head = n_params(make_net(0)), n_params(make_net(EMB)), n_params(make_head())
    gates = LAYERS * R
    expected = {
        "independent": (K * (body + head), 0, (body + head,) * K, 0),
        "shared": (body + head, body + head, (0,) * K, 0),
        "decomposed": (body + K * head, body, (head,) * K, 0),
        "nanoflow": (
            body_emb + K * (head + gates) + K * EMB,
            body_emb,
            (head + gates,) * K,
            K * EMB,
        ),
    }[mode]
    count = count_parameters(build_flow(mode))
    assert (count.total, count.shared, count.per_step, count.embedding) == expected
    assert count.total == count.shared + sum(count.per_step) + count.embedding + count.other
    assert count.other == 0


@pytest.mark.parametrize("mode", ["shared", "decomposed", "nanoflow"])
def test_shared_body_is_one_object(mode: str) -> None:
    estimators = build_estimators(K, make_net, make_head, mode, EMB)
    assert all(e.net is estimators[0].net for e in estimators)
    heads_shared = all(e.head is estimators[0].head for e in estimators)
    assert heads_shared == (mode == "shared")


def test_independent_nets_are_separate() -> None:
    estimators = build_estimators(K, make_net, make_head, "independent")
    assert len({id(e.net) for e in estimators}) == K


@pytest.mark.parametrize("mode", ["shared", "decomposed", "nanoflow"])
def test_gradients_from_every_step_accumulate_in_the_shared_body(mode: str) -> None:
    torch.manual_seed(0)
    estimators = build_estimators(K, make_net, make_head, mode, EMB)
    for e in estimators:
        randomise(e)
    x, mel = torch.randn(2, 1, 4, 3), torch.randn(2, MEL, 4, 3)
    shared = list(estimators[0].net.parameters())
    per_step = [torch.autograd.grad(e(x, mel).square().sum(), shared) for e in estimators]
    total = torch.autograd.grad(sum(e(x, mel).square().sum() for e in estimators), shared)
    for k, g in enumerate(total):
        expected = sum(step[k] for step in per_step)
        assert torch.allclose(g, expected, atol=1e-5)
        if per_step[1][k].abs().sum() > 1e-6:  # 1-element weight-norm directions get ~0
            assert not torch.allclose(g, per_step[0][k]), "only one step reached the body"


def test_step_embeddings_make_steps_differ() -> None:
    torch.manual_seed(0)
    estimators = build_estimators(2, make_net, make_head, "nanoflow", EMB)
    head = estimators[0].head
    estimators[1].head = head  # same head, so only the embedding and gates tell them apart
    randomise(estimators[0])
    x, mel = torch.randn(1, 1, 4, 3), torch.randn(1, MEL, 4, 3)
    assert not torch.allclose(estimators[0](x, mel), estimators[1](x, mel))


@pytest.mark.parametrize("mode", SHARING_MODES)
def test_deploy_folding_leaves_outputs_unchanged(mode: str) -> None:
    torch.manual_seed(0)
    flow = build_flow(mode).double()
    randomise(flow)
    x, mel = torch.randn(3, 1, 4, 5).double(), torch.randn(3, MEL, 4, 5).double()
    deployed = deploy(flow)
    assert torch.allclose(deployed.log_prob(x, mel), flow.log_prob(x, mel), atol=1e-10)
    z = torch.randn(3, 1, 4, 5).double()
    x_flow, _ = flow.transform.inverse(z, mel)
    x_deployed, _ = deployed.transform.inverse(z, mel)
    assert torch.allclose(x_flow, x_deployed, atol=1e-10)


def test_deploy_count_drops_weight_norm_and_embeddings() -> None:
    flow = build_flow("nanoflow")
    deployed = count_parameters(deploy(flow))
    body_plain = n_params(sf.sharing.remove_weight_norm(make_net(0)))
    folded = LAYERS * 2 * R
    assert deployed.embedding == 0
    assert deployed.shared == body_plain
    assert deployed.per_step == (n_params(make_head()) + LAYERS * R + folded,) * K


def test_nanoflow_mode_needs_an_embedding() -> None:
    with pytest.raises(ValueError, match="embedding_dim"):
        build_estimators(K, make_net, make_head, "nanoflow", 0)
    with pytest.raises(ValueError, match="unknown sharing mode"):
        build_estimators(K, make_net, make_head, "everything")  # type: ignore[arg-type]


def test_concatenated_embedding_folds_exactly() -> None:
    """The Glow-style injection (embedding concatenated to the input) folds to a bias."""
    from sharedflow.nets import PointwiseMLP

    torch.manual_seed(0)
    estimators = build_estimators(
        3, lambda e: PointwiseMLP(1, 2, hidden=8, embedding_dim=e), None, "nanoflow", 4
    )
    flow = sf.Sequential(
        [layer for e in estimators for layer in (sf.AffineCoupling(e), sf.reverse(2))]
    ).double()
    randomise(flow)
    x = torch.randn(5, 2).double()
    count = count_parameters(flow)
    assert count.embedding == 3 * 4 and count.per_step == (2 * 8,) * 3
    assert torch.allclose(deploy(flow)(x)[1], flow(x)[1], atol=1e-12)
    assert count_parameters(deploy(flow)).per_step == (2 * 8 + 8,) * 3


def test_modes_are_objects_and_names_and_recipe_nodes_give_the_same_ones() -> None:
    from sharedflow.sharing import Decomposed, Independent, NanoFlow, Shared, as_sharing

    assert as_sharing("nanoflow", 16) == NanoFlow(16)
    assert as_sharing({"_target_": "sharedflow.sharing.NanoFlow", "embedding_dim": 16}) == (
        NanoFlow(16)
    )
    assert [as_sharing(name) for name in ("independent", "shared", "decomposed")] == [
        Independent(),
        Shared(),
        Decomposed(),
    ]
    capabilities = [(m.shared_body, m.own_heads) for m in (Independent(), Shared(), Decomposed())]
    assert capabilities == [(False, True), (True, False), (True, True)]
    with pytest.raises(ValueError, match="set it on the mode"):
        as_sharing(NanoFlow(4), 8)
    with pytest.raises(ValueError, match="embedding_dim > 0"):
        NanoFlow(0)


def test_a_fifth_mode_is_one_class_and_one_yaml_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs: steps 2j and 2j+1 share one estimator. No library file changes."""
    from dataclasses import dataclass
    from typing import ClassVar

    from sharedflow.recipes import BUILDERS
    from sharedflow.sharing import Sharing, StepEstimator
    from sharedflow.train.run import train

    @dataclass(frozen=True)
    class Pairs(Sharing):
        name: ClassVar[str] = "pairs"
        shared_body: ClassVar[bool] = True
        own_heads: ClassVar[bool] = False

        def build(self, n_steps, make_net, make_head=None, make_stem=None):  # noqa: ANN001, ANN201
            parts = [(make_net(0), make_head and make_head(k)) for k in range(0, n_steps, 2)]
            return [StepEstimator(*parts[k // 2]) for k in range(n_steps)]

    BUILDERS.register("tests.Pairs", Pairs)
    (tmp_path / "recipes" / "sharing").mkdir(parents=True)
    (tmp_path / "recipes" / "sharing" / "pairs.yaml").write_text("_target_: tests.Pairs\n")
    monkeypatch.setenv("SHAREDFLOW_RECIPES", str(tmp_path / "recipes"))
    overrides = ["sharing@model.sharing=pairs", "trainer.max_steps=2", "trainer.val_items=1",
                 "trainer.progress=false", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    run = train("audio/waveflow-tiny", overrides)
    assert (run / "ckpt-00000002" / "model.safetensors").is_file()
    from sharedflow.api import build_model

    counts = count_parameters(build_model("audio/waveflow-tiny", overrides[:1], device="meta"))
    independent = count_parameters(build_model("audio/waveflow-tiny", device="meta"))
    assert counts.shared > 0 and counts.total < independent.total
