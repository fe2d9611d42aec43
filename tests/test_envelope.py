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


def _direct_fit(
    basis: torch.Tensor, log_mel: torch.Tensor, f0: torch.Tensor, win_length: int
) -> torch.Tensor:
    """The module doc's solution, written out over every bin and harmonic with ``torch.sinc``
    (8 kHz, 256-point FFT, 24 harmonics under 2.5 kHz, ridge 1e-3)."""
    n_fft, sample_rate, n_harmonics, ridge, max_frequency = 256, 8000, 24, 1e-3, 2500.0
    f = f0.double()[..., None] * torch.arange(1, n_harmonics + 1, dtype=torch.float64)
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    d = ((bins[:, None] - f[..., None, :]) * win_length / sample_rate).abs()
    one = (d - 1).abs() < 1e-6
    h = torch.where(one, 0.5, (torch.sinc(d) / torch.where(one, 1.0, 1 - d**2)).abs())
    g = win_length / 4 * h * ((f > 0) & (f < min(max_frequency, sample_rate / 2)))[..., None, :]
    q = basis.double() @ g
    gram = q.transpose(-1, -2) @ q
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[..., None, None]
    gram = gram + ridge * scale * torch.eye(n_harmonics, dtype=torch.float64)
    mel = log_mel.double().exp().transpose(1, 2)[..., None]
    a = torch.linalg.solve(gram, q.transpose(-1, -2) @ mel).clamp_min(0)
    return a[..., 0].transpose(1, 2)


@pytest.mark.parametrize("win_length", [256, 200])
def test_the_amplitudes_equal_the_direct_solution(win_length: int) -> None:
    """The fast path (the bins the filterbank reads, the harmonics some frame can hear, sines
    per bin and per harmonic) solves the same system as the plain formula."""
    mel = MelSpectrogram(8000, hop_length=64, n_mels=40, **MEL | {"f_max": 3000.0})
    torch.manual_seed(0)
    log_mel = torch.randn(2, 40, 12, dtype=torch.float64)
    f0 = 150 + 150 * torch.rand(2, 12, dtype=torch.float64)
    f0[0, :4] = 0.0  # unvoiced
    f0[1, 5] = 156.25  # on bin 5 (31.25 Hz apart): d = 0 at k = 1
    f0[1, 6] = 31.25 * 7 - 8000 / win_length  # d = 1 from bin 7 at k = 1
    read = HarmonicAmplitudes(mel.basis, 256, win_length, 8000, 24, max_frequency=2500.0)
    direct = _direct_fit(mel.basis, log_mel, f0, win_length)
    assert torch.allclose(read(log_mel, f0), direct, rtol=1e-9, atol=1e-12)
    assert (direct[:, :16] > 0).any() and torch.equal(direct[:, 17:], torch.zeros(2, 7, 12))
    silent = torch.zeros_like(f0)
    assert torch.equal(read(log_mel, silent), torch.zeros(2, 24, 12, dtype=torch.float64))


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

    @torch.no_grad()
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
