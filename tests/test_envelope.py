"""Harmonic amplitudes from the mel: a comb of known amplitudes read back, the source they weight,
and a WaveFlow whose source carries them."""

from __future__ import annotations

import math

import pytest
import torch

from sharedflow.audio.envelope import HarmonicAmplitudes
from sharedflow.audio.mel import MelSpectrogram
from sharedflow.audio.source import HarmonicSource
from sharedflow.audio.upsample import SourceUpsampler
from sharedflow.models import waveflow

MEL = {"n_fft": 256, "win_length": 256, "f_min": 0.0, "f_max": 4000.0}


def _comb(f0: float, amplitudes: torch.Tensor, n: int = 4096) -> torch.Tensor:
    """``sum_k A_k sin(2 pi k f0 t + 0.7 k)`` at 8 kHz, ``(n,)``."""
    t = torch.arange(n, dtype=torch.float64) / 8000
    k = torch.arange(1, len(amplitudes) + 1, dtype=torch.float64)[:, None]
    return (amplitudes.double()[:, None] * torch.sin(2 * math.pi * k * f0 * t + 0.7 * k)).sum(0)


@pytest.mark.parametrize("f0", [110.0, 230.0])
def test_a_comb_of_known_amplitudes_is_read_back_from_its_mel(f0: float) -> None:
    mel = MelSpectrogram(8000, hop_length=64, n_mels=40, **MEL)
    read = HarmonicAmplitudes(mel.basis, 256, 256, 8000, n_harmonics=32)
    k = torch.arange(1, int(3600 // f0) + 1, dtype=torch.float64)
    truth = 0.3 / k * (1 + 0.8 * torch.exp(-(((k * f0 - 700) / 200) ** 2)))  # 1/k and a formant
    log_mel = mel(_comb(f0, truth).float())[None]
    pitch = torch.full((1, log_mel.shape[-1]), f0)
    pitch[0, :3] = 0.0
    a = read(log_mel, pitch)[0]  # (32, F)
    assert torch.equal(read.to(torch.bfloat16)(log_mel, pitch)[0], a)  # solved in float64
    steady = a[:, 20:40].mean(-1)
    assert ((steady[: len(k)] / truth - 1).abs() < 0.1).all()
    assert torch.equal(a[:, :3], torch.zeros(32, 3))  # unvoiced frames
    above = min(32, int(4000 // f0) + 1)  # harmonics at or above Nyquist
    assert torch.equal(a[above:], torch.zeros(32 - above, a.shape[-1]))
    capped = HarmonicAmplitudes(mel.basis, 256, 256, 8000, n_harmonics=32, max_frequency=1000.0)
    a, fitted = capped.fit(log_mel, pitch)
    below = int(-(-1000 // f0)) - 1  # the harmonics under 1 kHz
    assert torch.equal(a[0, below:], torch.zeros_like(a[0, below:])) and (a[0, :below] > 0).any()
    explained = fitted[0, :, 20:40] / log_mel[0, :, 20:40].exp()  # the comb's share of the mel
    assert explained[:4].mean() > 0.8 and explained[-8:].mean() < 0.2  # low bands, not high


def test_the_amplitudes_are_upsampled_like_the_f0() -> None:
    source = HarmonicSource(3, 8000, 64, quadrature=True)
    f0 = torch.full((1, 9), 200.0)
    amplitude = torch.tensor([0.5, 0.2, 0.1])[None, :, None].expand(1, 3, 9)
    assert torch.equal(source.envelope(amplitude, f0, 512), amplitude[..., :1].expand(1, 3, 512))
    rising = torch.linspace(0, 8, 9)[None, None].expand(1, 3, 9)  # linear between frame centres
    ramp = source.envelope(rising, f0, 512)
    t = torch.arange(512)
    assert torch.allclose(ramp[0, 0], (t / 64).clamp_max(8), atol=1e-5)
    steps = source.envelope(rising, torch.zeros(1, 9), 512)  # unvoiced: the nearest frame's
    assert torch.equal(steps[0, 0], (t / 64 + 0.5).floor().clamp_max(8))


def test_a_waveflow_with_the_source_mean_models_the_audio_minus_the_estimate() -> None:
    settings = dict(
        height=None, channels=8, n_layers=3, n_flows=2, n_mels=40, sample_rate=8000,
        hop_length=64, mel=MEL, source_harmonics=16, source_quadrature=True, f0_min=100.0,
        f0_max=320.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="source_harmonics > 0"):
        waveflow(**settings | {"source_harmonics": 0, "source_mean": True})
    torch.manual_seed(0)
    plain, model = waveflow(**settings), waveflow(**settings, source_mean=True)
    count = sum(p.numel() for p in plain.parameters())
    extra = sum(p.numel() for p in model.parameters()) - count
    assert extra == 1 * 2 * 8 * 3 * 2  # one context row: 2R out, 3 layers, 2 flows
    k = torch.arange(1, 17, dtype=torch.float64)
    x = _comb(180.0, 0.3 / k * (1 + torch.exp(-(((k * 180 - 600) / 150) ** 2)))).float()[None]
    mel = model.mel(x)
    context = next(m for m in model.modules() if isinstance(m, SourceUpsampler))
    inner = slice(300, -300)

    def match(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        r = torch.corrcoef(torch.stack([a[inner], b[inner]]))[0, 1]
        return float(r), float(a[inner].square().mean().sqrt() / b[inner].square().mean().sqrt())

    estimate = context(mel, x.shape)[0, -1, :, 0]  # the phase row locks it to the audio
    r, level = match(estimate, x[0])
    assert r > 0.99 and 0.9 < level < 1.1  # harmonic k's phase is 0.7 k, which the lock finds
    model.eval()  # free, as in synthesis: the flows start near the identity, so an untrained
    free = context(model.mel.for_synthesis(mel), x.shape)[0, -1, :, 0]  # model synthesises
    # the estimate at T = 0
    y = model.synthesize(mel, 0.0, x.shape[-1])[0]
    r, level = match(y, free)
    assert r > 0.99 and 0.9 < level < 1.1
    assert match(free, x[0])[0] < 0.9  # the free source's phase is not the audio's
