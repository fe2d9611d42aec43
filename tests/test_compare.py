"""``sharedflow compare`` end to end on a micro comparison (a few steps)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

from sharedflow.api import build_model, parameter_report
from sharedflow.checkpoint import resolve_checkpoint
from sharedflow.cli import main
from sharedflow.compare import NOISE, OWN, OWN_LABEL, compare
from sharedflow.data import list_audio
from sharedflow.data.builtin import speech_corpus
from sharedflow.train.loop import read_metrics

MICRO = ["audio/waveflow-tiny", "audio/nanoflow-tiny"]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    assert (
        main(
            [
                "compare",
                *MICRO,
                "data.n_test=2",  # for every recipe trained: two clips to validate on
                "--out",
                str(out),
                "--steps",
                "2",
                "--max-items",
                "1",
                "--seeds",
                "2",
                "--jobs",
                "2",  # each run in a process of its own, two at a time
            ]
        )
        == 0
    )
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_tables_plots_and_samples_are_written(result: Path) -> None:
    rows = _rows(result)
    assert list(dict.fromkeys(r["entry"] for r in rows)) == [*MICRO, NOISE]
    assert all(r["status"] == "ok" for r in rows)
    configs = sorted(result.glob("runs/*/seed-*/config.yaml"))
    assert len(configs) == 4 and all(OmegaConf.load(c).data.n_test == 2 for c in configs)
    assert all(OmegaConf.load(c).trainer.val_every == 0 for c in configs)  # compare's defaults
    steps = [(r["step"], "loss" in r) for r in read_metrics(configs[0].parent)]
    assert steps == [(1, True), (2, True), (2, False)]  # one validation, at the end
    models = [r for r in rows if r["entry"] in MICRO]
    metrics = {r["metric"] for r in models}
    assert {"ll", "pesq", "stoi", "mcd_db", "mrstft", "log_mel_l1", "periodicity"} <= metrics
    assert all(r["seeds"] == "2" for r in models if r["metric"] == "ll")
    assert all(float(r["speed"]) > 0 and r["speed_unit"] == "kHz" for r in models)
    noise = {r["metric"] for r in rows if r["entry"] == NOISE}
    assert "pesq" in noise and "ll" not in noise  # noise has resynthesis scores, no likelihood
    table = (result / "results.md").read_text()
    assert "audio/nanoflow-tiny" in table and "±" in table and NOISE in table
    pictures = ["quality_vs_params.png", "training_curves.png"]
    pictures += [f"samples/{name.replace('/', '_')}.png" for name in MICRO]
    for name in pictures:
        with Image.open(result / name) as image:
            image.verify()
            assert image.format == "PNG"
    with Image.open(result / "samples" / "overview.png") as overview:
        with Image.open(result / pictures[-1]) as one:
            assert overview.height == len(MICRO) * one.height  # every entry's, stacked
    original, rate = sf.read(result / "samples" / "original.wav")
    for name in MICRO:
        audio, _ = sf.read(result / "samples" / f"{name.replace('/', '_')}.wav")
        assert rate == 22050 and len(audio) == len(original)


def test_several_held_out_sets_are_scored(result: Path, tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    for wav in list_audio(speech_corpus(n_clips=48))[-2:]:  # training clips: a second set
        (folder / wav.name).write_bytes(wav.read_bytes())
    entries = compare(
        MICRO[:1], result, steps=2, seeds=2, max_items=1, data=[str(folder), str(folder)]
    )
    assert list(entries[0].scores) == [str(folder)]  # one set, named once
    entries = compare(MICRO[:1], result, steps=2, seeds=1, max_items=1, data=[OWN, str(folder)])
    assert list(entries[0].scores) == [OWN_LABEL, str(folder)]  # the run's own clips, then these
    assert len(entries[0].scores[str(folder)]["ll"]) == 1
    own, other = (entries[0].scores[k]["ll"] for k in (OWN_LABEL, str(folder)))
    assert own != other


def test_runs_trained_one_after_another_in_this_process_equal_those_trained_apart(
    result: Path, tmp_path: Path
) -> None:
    entries = compare(
        MICRO[1:], tmp_path, steps=2, seeds=2, max_items=1, overrides=["data.n_test=2"], jobs=1
    )
    assert not entries[0].error
    for seed in (0, 1):
        here, apart = (
            load_file(resolve_checkpoint(root / "runs" / "audio_nanoflow-tiny" / f"seed-{seed}")
                      / "model.safetensors")
            for root in (tmp_path, result)
        )  # fmt: skip
        assert here.keys() == apart.keys() and all(torch.equal(here[k], apart[k]) for k in here)
    assert (result / "runs" / "audio_nanoflow-tiny" / "seed-0" / "train.log").is_file()
    assert not (tmp_path / "runs" / "audio_nanoflow-tiny" / "seed-0" / "train.log").exists()


def test_a_run_that_fails_in_its_process_fails_its_entry(tmp_path: Path) -> None:
    entries = compare(
        MICRO[1:], tmp_path, steps=2, seeds=2, overrides=["trainer.threads=0"], jobs=2
    )
    assert "trainer.threads=0: expected null or >= 1" in entries[0].error
    assert "train.log" in entries[0].error and "failed" in (tmp_path / "results.md").read_text()


def test_parameter_counts_equal_sharedflow_params(result: Path) -> None:
    for row in (r for r in _rows(result) if r["entry"] in MICRO and r["metric"] == "ll"):
        report = parameter_report(build_model(row["entry"], device="meta"))
        assert int(row["params"]) == report["training"]["total"]
        assert int(row["deploy_params"]) == report["deploy"]["total"]
        assert int(row["shared"]) == report["training"]["shared"]


def test_a_rerun_reuses_finished_runs(result: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in result.rglob("finished.json")}
    assert len(stamps) == 4  # two recipes, two seeds
    entries = compare(MICRO, result, steps=2, seeds=2, max_items=1)
    assert all(not e.error for e in entries)
    assert stamps == {p: p.stat().st_mtime_ns for p in result.rglob("finished.json")}


def test_failed_entries_are_reported_and_the_rest_completes(result: Path, tmp_path: Path) -> None:
    entries = compare(
        ["audio/nanoflow-tiny", "audio/no-such-recipe", "image/glow-tiny"],
        result,
        steps=2,
        max_items=1,
    )
    assert not entries[0].error
    assert "audio/no-such-recipe" in entries[1].error
    assert "image/glow-tiny: an image model in a comparison of audio models" in entries[2].error
    assert "failed" in (result / "results.md").read_text()


def test_overrides_alone_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "data.n_test=2", "--out", str(tmp_path)]) == 2
    assert "at least one recipe, run or preset besides overrides" in capsys.readouterr().err


def test_an_entry_folder_is_reused_with_its_seeds(result: Path, tmp_path: Path) -> None:
    folder = result / "runs" / MICRO[0].replace("/", "_")
    entries = compare([str(folder)], tmp_path, max_items=1)
    assert not entries[0].error
    assert entries[0].runs == [resolve_checkpoint(folder / f"seed-{s}") for s in (0, 1)]
    assert len(entries[0].scores[OWN_LABEL]["ll"]) == 2
