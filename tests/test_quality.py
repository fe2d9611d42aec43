"""Resynthesis metrics on cases whose values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from sharedflow.audio.quality import (
    QualityError,
    mel_cepstral_distortion,
    resynthesis_scores,
)
from sharedflow.data.builtin import synthesize_utterance

SR = 22050


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return torch.from_numpy(synthesize_utterance(np.random.default_rng(3), SR)).double()


@pytest.fixture(scope="module")
def noise(speech: torch.Tensor) -> torch.Tensor:
    """White noise with exactly the speech's energy (0 dB SNR)."""
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(speech.shape, generator=generator, dtype=speech.dtype)
    return white * speech.norm() / white.norm()


def test_identical_signals_score_perfectly(speech: torch.Tensor) -> None:
    scores = resynthesis_scores(speech, speech.clone(), SR)
    assert scores["pesq"] == pytest.approx(4.644, abs=1e-3)  # the wide-band ceiling
    assert scores["stoi"] == pytest.approx(1.0, abs=1e-6)
    for name in ("mcd_db", "mrstft", "log_mel_l1", "periodicity", "f0_cents"):
        assert scores[name] == pytest.approx(0.0, abs=1e-9), name


def test_mcd_of_a_known_filter_is_its_cepstral_distance() -> None:
    """y = x * (1 - b z^-1): the cepstra differ by -b^m / m, so on an unwarped axis
    MCD = (10 / ln 10) sqrt(2 sum_{m=1}^{24} (b^m / m)^2) = 3.177 dB for b = 0.5."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(3 * SR))
    b = 0.5
    y = torch.from_numpy(lfilter([1, -b], [1], x.numpy()))
    expected = 10 / math.log(10) * math.sqrt(2 * sum((b**m / m) ** 2 for m in range(1, 25)))
    assert mel_cepstral_distortion(x, y, SR, alpha=0.0) == pytest.approx(expected, rel=1e-3)
    assert mel_cepstral_distortion(x, 3 * x, SR) == pytest.approx(0.0, abs=1e-9)  # gain is c_0


def test_noise_at_a_known_snr_scores_between_identity_and_white_noise(
    speech: torch.Tensor, noise: torch.Tensor
) -> None:
    white = resynthesis_scores(speech, noise, SR)
    previous = resynthesis_scores(speech, speech, SR)
    for snr_db in (30, 10, 0):
        noisy = speech + noise * 10 ** (-snr_db / 20)  # noise power = speech power / 10^(snr/10)
        measured = 10 * math.log10(speech.pow(2).sum() / (noisy - speech).pow(2).sum())
        assert measured == pytest.approx(snr_db, abs=1e-6)
        scores = resynthesis_scores(speech, noisy, SR)
        assert scores["stoi"] < previous["stoi"] and scores["mcd_db"] > previous["mcd_db"]
        assert scores["mrstft"] > previous["mrstft"]
        previous = scores
    assert white["stoi"] < previous["stoi"] and white["pesq"] < 1.2
    assert white["periodicity"] > 0.3  # noise has no voicing where the speech has
    assert white["mcd_db"] > previous["mcd_db"] and white["mrstft"] > previous["mrstft"]


def test_pesq_and_stoi_are_the_packages_own(speech: torch.Tensor, noise: torch.Tensor) -> None:
    import librosa
    from pesq import pesq
    from pystoi import stoi

    noisy = speech + 0.1 * noise
    ref, deg = (librosa.resample(a.numpy(), orig_sr=SR, target_sr=16000) for a in (speech, noisy))
    scores = resynthesis_scores(speech, noisy, SR)
    assert scores["pesq"] == pytest.approx(pesq(16000, ref, deg, "wb"), rel=1e-9)
    assert scores["stoi"] == pytest.approx(stoi(speech.numpy(), noisy.numpy(), SR), rel=1e-9)


def test_unscoreable_pairs_are_clear_errors(speech: torch.Tensor) -> None:
    with pytest.raises(QualityError, match="differ in length"):
        resynthesis_scores(speech, speech[:-1], SR)
    with pytest.raises(QualityError, match="too short"):
        resynthesis_scores(speech[:100], speech[:100], SR)
