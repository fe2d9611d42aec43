"""The residual's noise: the lapped transform is orthogonal, its gains read white and coloured
noise back from their mels, and a WaveFlow that whitens its residual with them starts from
noise of the mel's loudness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sharedflow.audio.io import read_mel_input
from sharedflow.audio.mel import MelSpectrogram
from sharedflow.audio.noise import NoiseGains
from sharedflow.layers.lapped import LappedScale, imlt, mlt
from sharedflow.models import waveflow

MEL = {"n_fft": 256, "win_length": 256, "f_min": 0.0, "f_max": 4000.0}


def test_the_lapped_transform_is_orthogonal_and_local_in_frequency() -> None:
    x = torch.randn(2, 512, dtype=torch.float64)
    c = mlt(x, 64)
    assert c.shape == (2, 8, 64)
    torch.testing.assert_close(imlt(c), x)
    torch.testing.assert_close(c.square().sum((1, 2)), x.square().sum(1))  # Parseval
    t = torch.arange(512, dtype=torch.float64)
    tone = mlt(torch.cos(2 * math.pi * 20.5 / 128 * t), 64)  # coefficient 20's frequency
    assert tone.square().sum(0).argmax() == 20
    with pytest.raises(ValueError, match="multiple of 64 and at least 128"):
        mlt(torch.randn(1, 100), 64)
    with pytest.raises(ValueError, match="LappedScale reads a channel of the context, and none"):
        LappedScale(64)(torch.randn(1, 1, 8, 64))


def _gains(audio: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    mel = MelSpectrogram(8000, hop_length=64, n_mels=40, **MEL)
    read = NoiseGains(mel, block=64, floor=floor)
    log_mel = mel(audio)[None]
    return read(log_mel, torch.zeros_like(log_mel), audio.shape[-1])[0, 0].view(-1, 64).exp()


def test_noise_gains_read_the_level_and_the_spectrum_back_from_the_mel() -> None:
    torch.manual_seed(0)
    white = 0.05 * torch.randn(16384)
    gains = _gains(white)[4:-4]  # (blocks, 64); inner blocks, clear of the reflect padding
    assert 0.045 < gains[:, 2:60].median() < 0.055  # the noise's standard deviation
    low = torch.fft.irfft(torch.fft.rfft(white) * (torch.fft.rfftfreq(16384) < 0.125), 16384)
    coloured = _gains(low)[4:-4].median(0).values  # white below 1 kHz, silent above
    assert 0.04 < coloured[5:12].median() < 0.06  # 300-750 Hz
    assert coloured[30:].max() < 0.1 * coloured[5:12].median()  # above 2 kHz: the floor's
    gains = _gains(torch.zeros(16384))
    assert torch.isfinite(gains.log()).all() and (gains > 0).all()  # silence: small, not zero


def test_a_waveflow_whitening_its_residual_starts_from_noise_of_the_mels_loudness() -> None:
    settings = dict(
        height=8, channels=8, n_layers=3, n_flows=2, n_mels=40, sample_rate=8000,
        hop_length=64, mel=MEL, source_harmonics=8, source_mean=True, f0_min=100.0,
        f0_max=320.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="source_mean=true"):
        waveflow(**settings | {"source_mean": False, "source_noise": True})
    torch.manual_seed(0)
    plain, model = waveflow(**settings), waveflow(**settings, source_noise=True)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 1 * 2 * 8 * 3 * 2  # the log-gain row: 2R out, 3 layers, 2 flows
    assert (plain.length_multiple, model.length_multiple) == (8, 64)
    noise = 0.05 * torch.randn(1, 4096)
    assert model.log_prob(noise).shape == (1,)
    model.eval()  # the flows start near the identity: synthesis is the estimate (0, unvoiced)
    y = model.resynthesize(noise, temperature=1.0)  # plus noise of the gains' level
    assert y.shape == noise.shape
    assert 0.7 < float(y[0, 512:-512].std() / noise[0, 512:-512].std()) < 1.4
    assert float(plain.resynthesize(noise, temperature=1.0).std()) > 10 * float(y.std())
    with pytest.raises(ValueError, match="not a multiple of 64"):
        model.log_prob(noise[:, :4000])


def test_a_mel_for_synthesis_may_leave_out_the_phase_rows(tmp_path) -> None:
    model = waveflow(
        height=8, channels=8, n_layers=3, n_flows=2, n_mels=40, sample_rate=8000, hop_length=64,
        mel=MEL, source_harmonics=8, source_mean=True, source_aligned=True, source_noise=True,
        f0_min=100.0, f0_max=320.0,
    ).eval()  # fmt: skip
    assert (model.mel.channels, model.mel.synthesis_channels) == (49, 41)
    mel = model.mel(0.1 * torch.randn(1, 1024))
    np.save(tmp_path / "f0.npy", mel[0, :41].numpy())  # log-mel and f0, as an acoustic model
    ((read, length),) = read_mel_input(tmp_path / "f0.npy", model)  # gives them
    assert read.shape == (49, 17) and length == 64 * 17
    assert torch.equal(read, model.mel.for_synthesis(mel)[0]) and not read[41:].any()
    noise = torch.randn(1, 1024)
    y = model.synthesize(read[None], 0.5, 1024, noise)
    assert torch.equal(y, model.synthesize(mel, 0.5, 1024, noise))  # the phases are not read
    np.save(tmp_path / "mel.npy", mel[0, :40].numpy())
    with pytest.raises(ValueError, match=r"\(41, F\) or \(B, 41, F\) or \(49, F\)"):
        read_mel_input(tmp_path / "mel.npy", model)
