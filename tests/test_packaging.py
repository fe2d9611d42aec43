"""The recipes live at the top of the repository and ship in the wheel; users add their own
folders of recipes; sweeps run through hydra's own multirun launcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharedflow.cli import main
from sharedflow.recipes import RECIPES_DIR, RecipeError, compose, list_recipes

ROOT = Path(__file__).parents[1]
FAST = ["trainer.max_steps=1", "trainer.val_items=1", "trainer.progress=false"]


def test_the_wheel_lists_every_package_and_maps_the_recipes() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "sharedflow").rglob("__init__.py")
    }
    recipe_folders = {
        ".".join(("sharedflow", "configs", *d.relative_to(ROOT / "recipes").parts))
        for d in [ROOT / "recipes", *(ROOT / "recipes").rglob("*")]
        if d.is_dir()
    }
    assert set(setuptools["packages"]) == on_disk | recipe_folders
    assert setuptools["package-dir"] == {"sharedflow.configs": "recipes"}
    assert RECIPES_DIR == ROOT / "recipes" and (RECIPES_DIR / "train.yaml").is_file()
    assert not (ROOT / "sharedflow" / "recipes").exists()  # the module has no folder namesake


@pytest.fixture
def user_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with one experiment that uses a model config of its own."""
    (tmp_path / "experiment" / "audio").mkdir(parents=True)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my-waveflow.yaml").write_text(
        (RECIPES_DIR / "model" / "waveflow.yaml").read_text().replace("height: 16", "height: 4")
    )
    (tmp_path / "experiment" / "audio" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: my-waveflow\n  - override /trainer: tiny\n"
        "name: mine\nmodel:\n  channels: 8\n  n_layers: 2\n  n_flows: 2\n"
        "data:\n  segment_length: 2048\n"
    )
    monkeypatch.setenv("SHAREDFLOW_RECIPES", "")  # restored after the test, whoever sets it
    return tmp_path


def test_a_users_recipe_folder_adds_experiments_and_configs(
    user_recipes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "audio/mine" not in list_recipes()
    monkeypatch.setenv("SHAREDFLOW_RECIPES", str(user_recipes))
    assert "audio/mine" in list_recipes() and "audio/waveflow-tiny" in list_recipes()
    cfg = compose("audio/mine")
    assert (cfg.model.height, cfg.model.channels, cfg.trainer.max_steps) == (4, 8, 300)


def test_recipes_flag_trains_a_users_recipe(
    user_recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", "--recipes", str(user_recipes), "audio/mine", *FAST, f"run_dir={run}"]) == 0
    )
    assert (run / "ckpt-00000001" / "model.safetensors").is_file()
    assert main(["params", "--recipes", str(user_recipes), "audio/mine"]) == 0
    assert "audio/mine" in capsys.readouterr().out


def test_a_users_config_that_would_be_shadowed_is_refused(
    user_recipes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (user_recipes / "model" / "waveflow.yaml").write_text("height: 2\n")
    monkeypatch.setenv("SHAREDFLOW_RECIPES", str(user_recipes))
    with pytest.raises(RecipeError, match="model/waveflow.yaml would shadow"):
        compose("audio/mine")
    monkeypatch.setenv("SHAREDFLOW_RECIPES", str(user_recipes / "missing"))
    with pytest.raises(RecipeError, match="is not a directory"):
        list_recipes()


@pytest.mark.parametrize("given", [False, True], ids=["default-dir", "run-dir-given"])
def test_a_sweep_runs_through_hydras_launcher(
    given: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = tmp_path / ("sweep" if given else "multirun/waveflow-tiny")
    extra = [f"run_dir={base}"] if given else []
    args = ["train", "-m", "audio/waveflow-tiny", *FAST, "model.channels=4,8", *extra]
    assert main(args) == 0
    for job, channels in enumerate((4, 8)):
        run = base / str(job)
        assert (run / "ckpt-00000001").is_dir()
        config = (run / "config.yaml").read_text()
        assert f"channels: {channels}\n" in config and f"run_dir: {run}" in config
    assert (base / "multirun.yaml").is_file()  # hydra's record of the sweep
