"""Every recipe composes and builds; paper recipes have the reference parameter counts; every
tiny recipe trains two steps on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sharedflow.api import build_model, parameter_report
from sharedflow.recipes import RecipeError, compose, list_recipes
from sharedflow.train.run import train

# Reference counts (training, deploy) of the paper recipes: shared/reference.
PAPER = {
    "audio/waveglow": (87_879_272, 87_731_816),
    "audio/waveflow-h16-r64": (5_950_180, 5_925_090),
    "audio/waveflow-h16-r128": (22_385_892, 22_335_714),
    "audio/waveflow-h16-r64-bipartize": (5_950_164, 5_925_074),
    "audio/waveflow-parakeet-h16-r64": (5_950_164, 5_925_074),
    "audio/nanoflow-naive-h16-r128": (2_798_408, 2_792_134),
    "audio/nanoflow-decomp-h16-r128": (2_800_228, 2_793_954),
    "audio/nanoflow-h16-r128-emb512": (3_865_188, 2_818_530),
    "audio/nanoflow-h16-r128-emb1024-f16": (4_936_324, 2_845_186),
    "image/tarflow-imagenet64-bpd": (460_142_784, 460_142_784),
    "image/tarflow-imagenet64": (460_142_784, 460_142_784),
    "image/tarflow-imagenet64-cond": (466_286_784, 466_286_784),
    "image/tarflow-imagenet128-cond": (823_927_552, 823_927_552),
    "image/tarflow-afhq256-cond": (463_481_856, 463_481_856),
    "image/glow-cifar10": (15_972_912, 15_972_912),
    "image/glow-large-cifar10": (287_488_560, 287_488_560),
    "image/nanoflow-glow-naive-cifar10": (9_263_064, 9_263_064),
    "image/nanoflow-glow-decomp-cifar10": (9_934_896, 9_934_896),
    "image/nanoflow-glow-cifar10": (10_113_264, 10_113_264),
    "image/nanoflow-glow-k48-cifar10": (10_718_544, 10_718_544),
}
# Paper-scale recipes at other sample rates (tests/test_sample_rates.py checks their counts).
OTHER_RATES = ["audio/waveflow-h16-r64-24k", "audio/waveflow-h16-r64-44k"]
# CPU recipes on built-in data: the tiny ones, and longer ones that reach further.
LONGER = [
    "image/tarflow-shapes",
    "audio/waveflow-16k-h128",
    "audio/waveflow-8k-harmonics",
    "audio/waveflow-8k-source",
]
TINY = [name for name in list_recipes() if name.endswith("-tiny")] + LONGER


def test_every_recipe_is_paper_or_tiny() -> None:
    assert set(list_recipes()) == set(PAPER) | set(OTHER_RATES) | set(TINY)
    for recipe in OTHER_RATES:
        cfg = compose(recipe)
        assert cfg.trainer.paper_scale and cfg.trainer.device == "auto"


@pytest.mark.parametrize("recipe", sorted(PAPER))
def test_paper_recipe_has_the_reference_parameter_count(recipe: str) -> None:
    report = parameter_report(build_model(recipe, device="meta"))  # no memory, no init
    assert (report["training"]["total"], report["deploy"]["total"]) == PAPER[recipe]
    cfg = compose(recipe)
    assert cfg.trainer.paper_scale and cfg.trainer.device == "auto"


# The one-column vocoder's end-of-run sample is sequential over every sample of a 1-2.5 s
# clip (about 30 s on 2 cores): here it trains and samples in 512 rows; the one-column
# path is covered end to end by the tiny one-column vocoder in tests/test_audio_models.py.
IN_ROWS = ["model.height=512", "data.length_multiple=512"]
FASTER = {"audio/waveflow-8k-harmonics": IN_ROWS, "audio/waveflow-8k-source": IN_ROWS}


@pytest.mark.parametrize("recipe", TINY)
def test_tiny_recipe_trains_two_steps(recipe: str, tmp_path: Path) -> None:
    run_dir = train(
        recipe,
        [
            f"run_dir={tmp_path / 'run'}",
            "trainer.max_steps=2",
            "trainer.val_items=1",
            "trainer.progress=false",
            *FASTER.get(recipe, []),
        ],
    )
    assert (run_dir / "ckpt-00000002" / "model.safetensors").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert any((run_dir / "samples").iterdir())


@pytest.mark.parametrize("recipe", ["audio/waveflow-8k-harmonics", "audio/waveflow-8k-source"])
def test_the_8k_recipes_are_one_column(recipe: str) -> None:
    model = build_model(recipe, device="cpu")
    assert model.length_multiple == 1
    assert model.log_prob(torch.zeros(1, 1000) + 1e-3).shape == (1,)  # any length


def test_unknown_recipe_and_unknown_key_are_clear_errors() -> None:
    with pytest.raises(RecipeError, match="did you mean audio/waveflow-tiny"):
        compose("audio/waveflow-tinyy")
    with pytest.raises(RecipeError, match="max_stepz"):
        compose("audio/waveflow-tiny", ["trainer.max_stepz=3"])


def test_foreign_targets_are_refused() -> None:
    with pytest.raises(RecipeError, match="not one of sharedflow.s builders"):
        compose("audio/waveflow-tiny", ["model._target_=os.system"])
