"""Vocoders at other sample rates: the upsampler's strides follow the hop length, the mel
settings are the recipe's, and a mel or data rate that does not match the model's is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sharedflow.api import build_model, parameter_report
from sharedflow.audio.io import read_mel_input
from sharedflow.audio.upsample import WaveFlowUpsampler, upsample_strides
from sharedflow.models import waveflow, waveglow
from sharedflow.recipes import RecipeError
from sharedflow.train.run import train


@pytest.mark.parametrize(
    ("hop", "strides"), [(256, (16, 16)), (300, (15, 20)), (512, (16, 32)), (200, (10, 20))]
)
def test_the_upsampler_covers_hop_samples_per_frame(hop: int, strides: tuple[int, int]) -> None:
    assert upsample_strides(hop) == strides
    up = WaveFlowUpsampler(height=4, strides=strides)
    frames = 7
    context = up(torch.randn(2, 80, frames), (2, hop * frames))
    assert context.shape == (2, 80, 4, hop * frames // 4)


def test_other_rate_recipes_differ_from_the_reference_only_where_they_must() -> None:
    """h16-r64 is 5,950,180; strides 15 x 20 add 3 (30 + 40 - 64) = 18 weights, and 128 mels
    add (128 - 80) 128 weights to each of the 64 layers' conditioning, with strides 16 x 32
    adding 3 (32 + 64 - 64) = 96."""
    counts = {
        recipe: parameter_report(build_model(recipe, device="meta"))["training"]["total"]
        for recipe in ("audio/waveflow-h16-r64-24k", "audio/waveflow-h16-r64-44k")
    }
    assert counts == {
        "audio/waveflow-h16-r64-24k": 5_950_180 + 18,
        "audio/waveflow-h16-r64-44k": 5_950_180 + 48 * 128 * 64 + 96,
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda: waveflow(
            4,
            8,
            2,
            2,
            sample_rate=24000,
            hop_length=300,
            mel={"n_fft": 2048, "win_length": 1200, "f_min": 80.0, "f_max": 7600.0},
        ),
        lambda: waveglow(
            4,
            4,
            0,
            0,
            16,
            2,
            sample_rate=44100,
            hop_length=512,
            n_mels=128,
            mel={"n_fft": 2048, "win_length": 2048, "f_max": None},
        ),
    ],
    ids=["waveflow-24k", "waveglow-44k"],
)
def test_a_vocoder_at_another_rate_round_trips_and_synthesises_hop_frames(make) -> None:
    torch.manual_seed(0)
    model = make().eval()
    hop, frames = model.hop_length, 6
    audio = 0.1 * torch.randn(1, hop * frames)
    mel = model.mel(audio)[..., :frames]
    with torch.no_grad():
        z, _ = model.flow.forward(audio, mel)
        back = model.decode(mel, z)
        assert model.synthesize(mel, 0.5).shape == (1, hop * frames)
    torch.testing.assert_close(back, audio, atol=1e-4, rtol=1e-4)


def test_a_mel_whose_settings_differ_is_an_error_naming_both(tmp_path: Path) -> None:
    model = waveflow(4, 8, 2, 2, sample_rate=16000, hop_length=200, mel={"win_length": 800})
    mel = np.zeros((80, 5), np.float32) - 5
    good = tmp_path / "good.npz"
    np.savez(good, mel=mel, sample_rate=16000, hop_length=200, win_length=800, f_max=8000.0)
    [(read, length)] = read_mel_input(good, model)
    assert read.shape == (80, 5) and length == 1000
    bad = tmp_path / "bad.npz"
    np.savez(bad, mel=mel, sample_rate=22050, hop_length=256, n_fft=1024)
    with pytest.raises(
        ValueError,
        match=r"sample_rate=22050 \(the model's: 16000\), "
        r"hop_length=256 \(the model's: 200\)",
    ):
        read_mel_input(bad, model)


def test_data_at_another_rate_than_the_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError, match="data.sample_rate=16000 does not match model.sample_rate=22050"
    ):
        train("audio/waveflow-tiny", [f"run_dir={tmp_path}", "data.sample_rate=16000"])
    assert not (tmp_path / "config.yaml").exists()


def test_clips_cut_off_the_model_fold_are_refused_before_training(tmp_path: Path) -> None:
    """128 rows with hop 64: held-out clips cut to multiples of 64 would fail at validation."""
    with pytest.raises(RecipeError, match=r"data.length_multiple=64 .* multiple of 128"):
        train(
            "audio/waveflow-tiny",
            [f"run_dir={tmp_path}", "model.height=128", "model.hop_length=64"],
        )
    assert not list(tmp_path.glob("ckpt-*"))


def test_a_fold_longer_than_the_hop_synthesises_the_length_asked_for() -> None:
    """128 rows at hop 64: 3 frames give 192 samples, which the flow runs as 256, past the
    mel's end; a 1000-sample wav (16 frames) is resynthesised as 1000 samples."""
    torch.manual_seed(0)
    mel_settings = {"n_fft": 256, "win_length": 256, "f_min": 0.0, "f_max": 4000.0}
    model = waveflow(128, 4, 2, 2, n_mels=20, sample_rate=8000, hop_length=64, mel=mel_settings)
    assert model.synthesize(torch.randn(1, 20, 3)).shape == (1, 192)
    audio = model.resynthesize(0.1 * torch.randn(1, 1000))
    assert audio.shape == (1, 1000) and torch.isfinite(audio).all()
