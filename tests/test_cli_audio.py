"""The audio commands as a user runs them: train, evaluate, synthesize, params."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sharedflow.api import build_model, parameter_report
from sharedflow.cli import main
from sharedflow.data import list_audio
from sharedflow.data.builtin import speech_corpus

# the tiny recipe without its harmonic-plus-noise front end
PLAIN = [
    "model.source_harmonics=0",
    "model.source_mean=false",
    "model.source_aligned=false",
    "model.source_noise=false",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "nanoflow"
    overrides = [
        f"run_dir={run}",
        "trainer.max_steps=60",
        "trainer.val_every=60",
        "trainer.val_items=4",
        "trainer.progress=false",
        "data.segment_length=2048",
        *PLAIN,  # these tests give it mels of 80 rows, as Tacotron 2 writes them
    ]
    assert main(["train", "audio/nanoflow-tiny", *overrides]) == 0
    return run


def _held_out(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val_ll" in r]


def test_training_clearly_improves_the_held_out_likelihood(run_dir: Path) -> None:
    records = _held_out(run_dir)
    assert [r["step"] for r in records] == [0, 60]
    assert records[-1]["val_ll"] > records[0]["val_ll"] + 1.0  # nats per sample


def test_evaluate_prints_the_test_ll(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(run_dir), "--json", "--max-items", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ll"] == pytest.approx(_held_out(run_dir)[-1]["val_ll"], abs=1e-4)


def test_synthesize_from_wav_npy_and_pt(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = list_audio(speech_corpus(n_clips=48))[0]
    np.save(tmp_path / "one.npy", np.random.default_rng(0).normal(-5, 1, (80, 20)).astype("f4"))
    torch.save(torch.randn(2, 80, 12) - 5, tmp_path / "batch.pt")
    out = tmp_path / "out"
    args = [
        "synthesize",
        str(run_dir),
        str(wav),
        str(tmp_path / "one.npy"),
        str(tmp_path / "batch.pt"),
        "--out",
        str(out),
        "--denoise",
        "0.05",
    ]
    assert main(args) == 0
    assert "real-time factor" in capsys.readouterr().out
    expected = {
        wav.stem: sf.info(str(wav)).frames,  # a wav's resynthesis is as long as the wav
        "one": 256 * 20,
        "batch-0": 256 * 12,
        "batch-1": 256 * 12,
    }
    for stem, length in expected.items():
        audio, rate = sf.read(out / f"{stem}.wav")
        info = sf.info(str(out / f"{stem}.wav"))
        assert rate == 22050 and info.subtype == "PCM_16" and len(audio) == length
        assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-3


def test_synthesize_in_bf16_matches_fp32(run_dir: Path, tmp_path: Path) -> None:
    """At temperature 0 the output is deterministic: bf16 stays within 5% RMS of fp32."""
    np.save(tmp_path / "one.npy", np.random.default_rng(0).normal(-5, 1, (80, 20)).astype("f4"))
    outputs = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        args = ["synthesize", str(run_dir), str(tmp_path / "one.npy"), "--out", str(out)]
        assert main([*args, "--dtype", dtype, "--temperature", "0", "--denoise", "0.05"]) == 0
        outputs[dtype], _ = sf.read(out / "one.wav")
    reference, bf16 = outputs["fp32"], outputs["bf16"]
    assert len(bf16) == 256 * 20 and np.isfinite(bf16).all()
    assert np.sqrt(np.mean(reference**2)) > 1e-3  # the mel drives it: not silence
    assert np.sqrt(np.mean((bf16 - reference) ** 2)) < 0.05 * np.sqrt(np.mean(reference**2))


def test_auto_precision_is_probed_on_the_loaded_models_own_product(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sharedflow.api import held_out_set, load_model
    from sharedflow.precision import Capabilities

    probed = []
    detect = Capabilities.detect

    def spy(device="cpu", measure=True, gemm=None):
        probed.append(gemm)
        return detect(device, False, gemm)

    monkeypatch.setattr(Capabilities, "detect", staticmethod(spy))
    np.save(tmp_path / "one.npy", np.random.default_rng(0).normal(-5, 1, (80, 20)).astype("f4"))
    synthesize = ["synthesize", str(run_dir), str(tmp_path / "one.npy"), "--out", str(tmp_path)]
    assert main(synthesize) == 0
    evaluate = ["evaluate", str(run_dir), "--max-items", "1", "--resynthesis"]
    assert main(evaluate) == 0
    model, config = load_model(run_dir)
    first = len(held_out_set(config).items[0])
    assert probed == [model.generation_gemm(256 * 20), model.generation_gemm(first)]
    assert probed[0] is not None and probed[0][0] == 256 * 20 // model.length_multiple


def test_params_json_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "audio/nanoflow-tiny", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = parameter_report(build_model("audio/nanoflow-tiny"))
    assert printed["training"] == expected["training"] and printed["deploy"] == expected["deploy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "missing-run"], "no such checkpoint"),
        (["train", "audio/no-such-recipe"], "unknown recipe"),
        (["train", "audio/waveflow-tiny", "trainer.max_stepz=1"], "max_stepz"),
        (["params", "audio/waveflow-tiny", "model.sharing=everything"], "unknown sharing mode"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_synthesize_refuses_bad_inputs(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((64, 10), dtype="f4"))
    sf.write(tmp_path / "slow.wav", np.zeros(8000, dtype="f4"), 16000)
    (tmp_path / "weights.pt").write_bytes(b"pickle")
    cases = [
        ([str(run_dir), str(tmp_path / "wide.npy")], "expected a mel of shape (80, F)"),
        ([str(run_dir), str(tmp_path / "slow.wav")], "sample rate 16000 Hz"),
        ([str(run_dir), str(tmp_path / "none.wav")], "no such input"),
        (
            [str(tmp_path / "weights.pt"), str(tmp_path / "wide.npy")],
            "not a sharedflow checkpoint",
        ),
    ]
    for args, message in cases:
        assert main(["synthesize", *args, "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    # A good input before a bad one: nothing is synthesised, nothing written.
    np.save(tmp_path / "good.npy", np.zeros((80, 4), dtype="f4") - 5)
    args = [str(run_dir), str(tmp_path / "good.npy"), str(tmp_path / "none.npy")]
    assert main(["synthesize", *args, "--out", str(tmp_path / "o")]) == 2
    assert "no such input" in capsys.readouterr().err and not (tmp_path / "o").exists()
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "good.npy", np.zeros((80, 4), dtype="f4") - 5)
    args = [str(run_dir), str(tmp_path / "good.npy"), str(tmp_path / "sub" / "good.npy")]
    assert main(["synthesize", *args, "--out", str(tmp_path / "o")]) == 2
    assert "outputs would collide" in capsys.readouterr().err
    # The refusal names the flag that converts, and the flag does: half a second at 16 kHz
    # comes out as half a second at the model's rate.
    args = [str(run_dir), str(tmp_path / "slow.wav"), "--out", str(tmp_path / "o")]
    assert main(["synthesize", *args]) == 2
    assert "--resample for synthesize" in capsys.readouterr().err
    assert main(["synthesize", *args, "--resample"]) == 0
    audio, rate = sf.read(tmp_path / "o" / "slow.wav")
    assert rate == 22050 and len(audio) == pytest.approx(0.5 * 22050, abs=256)


def test_resynthesis_metrics_order_distortions() -> None:
    from sharedflow.audio.quality import mel_cepstral_distortion, multi_resolution_stft

    clip = torch.from_numpy(np.random.default_rng(0).standard_normal(22050).astype("f4")) * 0.1
    slightly = clip + 0.01 * torch.randn_like(clip)
    badly = clip + 0.1 * torch.randn_like(clip)
    assert multi_resolution_stft(clip, clip) == pytest.approx(0.0, abs=1e-6)
    assert mel_cepstral_distortion(clip, clip, 22050) == pytest.approx(0.0, abs=1e-6)
    assert 0 < multi_resolution_stft(clip, slightly) < multi_resolution_stft(clip, badly)
    assert (
        0
        < mel_cepstral_distortion(clip, slightly, 22050)
        < mel_cepstral_distortion(clip, badly, 22050)
    )


def test_evaluate_reports_resynthesis_quality(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(run_dir), "--json", "--max-items", "2", "--resynthesis"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scored"] == "scored 2 of 8 held-out items of the run's data"
    assert result["mrstft"] > 0 and 0 < result["mcd_db"] < 40
    assert 1 <= result["pesq"] <= 4.65 and 0 <= result["stoi"] <= 1
    assert 0 <= result["periodicity"] <= 1 and result["log_mel_l1"] > 0
    assert main(args) == 0  # the resynthesis noise is seeded: the same figures again
    assert json.loads(capsys.readouterr().out) == result


def test_evaluate_scores_any_folder_without_a_training_split(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "real"
    folder.mkdir()
    for wav in list_audio(speech_corpus(n_clips=48))[:3]:
        (folder / wav.name).write_bytes(wav.read_bytes())
    assert main(["evaluate", str(run_dir), f"source={folder}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scored"] == f"scored 3 of 3 clips of {folder}: every clip"
    sf.write(folder / "short.wav", np.zeros(100, dtype="f4"), 22050)
    assert main(["evaluate", str(run_dir), f"source={folder}", "--resynthesis"]) == 2
    assert "short.wav" in capsys.readouterr().err


def test_evaluate_uses_the_ljspeech_reference_split(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = speech_corpus(n_clips=48)  # the LJSpeech layout: all 48 < 1310 are the test split
    assert main(["evaluate", str(run_dir), f"source={corpus}", "--json", "--max-items", "1"]) == 0
    scored = json.loads(capsys.readouterr().out)["scored"]
    assert scored == (
        f"scored 1 of 48 clips of {corpus}: the LJSpeech reference test split (first 1310 clips)"
    )


def test_synthesis_reports_clipping_and_refuses_non_finite_input(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loud = np.zeros((80, 8), dtype="f4") + 4.0  # far louder than anything seen in training
    np.save(tmp_path / "loud.npy", loud)
    args = ["synthesize", str(run_dir), str(tmp_path / "loud.npy"), "--out", str(tmp_path / "o")]
    assert main([*args, "--temperature", "3"]) == 0
    err = capsys.readouterr().err
    assert "beyond full scale" in err and "clipped" in err
    loud[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", loud)
    args = ["synthesize", str(run_dir), str(tmp_path / "nan.npy"), "--out", str(tmp_path / "n")]
    assert main(args) == 2
    assert "nan.npy: the mel holds NaN" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before any work
        main([*args, "--temperature", "nan"])
    assert exit_info.value.code == 2 and "--temperature" in capsys.readouterr().err
