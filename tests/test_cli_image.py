"""The image commands as a user runs them: train a tiny model, evaluate, sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sharedflow.cli import main

SMALL = ["data.builtin_per_class=64", "trainer.batch_size=16"]  # the recipes' data and batch, cut


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tarflow"
    overrides = [
        f"run_dir={run}",
        "trainer.max_steps=80",
        "trainer.val_every=80",
        "trainer.progress=false",
        *SMALL,
    ]
    assert main(["train", "image/tarflow-tiny", *overrides]) == 0
    return run


def test_training_clearly_improves_held_out_bits_per_dim(run_dir: Path) -> None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    held_out = [r for r in map(json.loads, lines) if "val_bpd" in r]
    assert [r["step"] for r in held_out] == [0, 80]
    assert held_out[-1]["val_bpd"] < held_out[0]["val_bpd"] - 0.5


def test_sample_writes_a_grid_of_the_right_size(run_dir: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    args = [
        "sample",
        str(run_dir),
        "--n",
        "6",
        "--out",
        str(grid),
        "--label",
        "0",
        "1",
        "2",
        "--guidance",
        "1.5",
        "--annealed",
        "--individual",
        str(tmp_path / "each"),
    ]
    assert main(args) == 0
    with Image.open(grid) as image:
        assert image.size == (3 * 18 + 2, 2 * 18 + 2)  # 3 x 2 tiles of 16 px + borders
    assert len(list((tmp_path / "each").glob("*.png"))) == 6


def test_sample_with_jacobi_reports_iterations(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "sample",
        str(run_dir),
        "--n",
        "2",
        "--out",
        str(tmp_path / "g.png"),
        "--jacobi",
        "1e-4",
        "--chunk",
        "8",
        "--denoise",
    ]
    assert main(args) == 0
    assert "Jacobi iterations per block" in capsys.readouterr().out


def test_evaluate_reports_bits_per_dim(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["bpd"] < 9
    # A held-out path for a model trained on built-in data is read, and named, as a folder.
    (tmp_path / "a").mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (90 * i, 50, 200)).save(tmp_path / "a" / f"{i}.png")
    assert main(["evaluate", str(run_dir), f"source={tmp_path}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scored"].endswith(
        f"2 images of {tmp_path} (folder)"
    )


def test_sample_bad_inputs(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "g.png"), "--label", "9"]) == 2
    assert "labels must lie in 0..3" in capsys.readouterr().err


def test_image_folder_bad_inputs(tmp_path: Path) -> None:
    from sharedflow.data.images import ImageError, ImageFolder

    (tmp_path / "a").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "a" / "ok.png")
    Image.new("L", (20, 20)).save(tmp_path / "a" / "gray.png")
    Image.new("RGB", (6, 9)).save(tmp_path / "a" / "small.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    folder = ImageFolder(tmp_path, 16, min_size=16)
    names = [p.name for p, _ in folder.items]
    with pytest.raises(ImageError, match=r"broken\.png: cannot read image"):
        folder[names.index("broken.png")]
    with pytest.raises(ImageError, match=r"gray\.png: 1 channels \(L\), the model expects 3"):
        folder[names.index("gray.png")]
    with pytest.raises(ImageError, match=r"small\.png: 6x9 is too small"):
        folder[names.index("small.png")]
    assert folder[names.index("ok.png")][0].shape == (3, 16, 16)


class _TinyExtractor(torch.nn.Module):
    """A stand-in Inception: uint8 (N, 3, H, W) -> pooled colour features (N, 12)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_fid_runs_with_local_weights_and_explains_when_they_are_missing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "inception.pt"
    torch.jit.script(_TinyExtractor()).save(str(weights))
    assert (
        main(["evaluate", str(run_dir), "--json", "--fid", str(weights), "--fid-samples", "32"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["fid"] >= 0
    assert main(["evaluate", str(run_dir), "--fid", str(tmp_path / "missing.pt")]) == 2
    assert "needs Inception weights" in capsys.readouterr().err


def test_frechet_distance_matches_its_closed_forms() -> None:
    import numpy as np

    from sharedflow.fid import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)
    # Covariances that do not commute, in 2-D, where a PSD-similar M has
    # tr M^(1/2) = sqrt(tr M + 2 sqrt(det M)).
    x = rng.standard_normal((400, 2)) @ np.array([[2.0, 0.0], [1.5, 0.5]])
    y = rng.standard_normal((300, 2)) @ np.array([[0.3, -1.0], [1.0, 1.0]]) + [1.0, -2.0]
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    m = cov_x @ cov_y
    known = (
        ((x.mean(0) - y.mean(0)) ** 2).sum()
        + np.trace(cov_x + cov_y)
        - 2 * np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    )
    assert frechet_distance(x, y) == pytest.approx(known, rel=1e-9)


@pytest.mark.parametrize(
    "recipe", ["image/nanoflow-tarflow-tiny", "image/glow-tiny", "image/nanoflow-glow-tiny"]
)
def test_every_image_family_improves_on_its_initial_model(recipe: str, tmp_path: Path) -> None:
    overrides = [
        f"run_dir={tmp_path}",
        "trainer.max_steps=100",
        "trainer.val_every=100",
        "trainer.progress=false",
        *SMALL,
    ]
    assert main(["train", recipe, *overrides]) == 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    held_out = [r["val_bpd"] for r in map(json.loads, lines) if "val_bpd" in r]
    assert held_out[-1] < held_out[0] - 0.5
