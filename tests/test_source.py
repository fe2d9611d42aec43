"""The harmonic source: YIN's f0 against known pitches and librosa, the excitation it drives and
its phase lock, the rows of the pitched mel, and a WaveFlow that reads the source in training
(locked to the audio) and in synthesis (free)."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from sharedflow.audio.io import read_mel_input
from sharedflow.audio.mel import MelSpectrogram, PitchedMel
from sharedflow.audio.pitch import Pitch
from sharedflow.audio.source import HarmonicSource, phase_offsets, upsample
from sharedflow.models import waveflow
from sharedflow.nets import WaveNet2D

MEL = {"n_fft": 256, "win_length": 256, "f_min": 0.0, "f_max": 4000.0}
SMALL = dict(
    height=None, channels=8, n_layers=3, n_flows=2, n_mels=20, sample_rate=8000, hop_length=64,
    mel=MEL,
)  # fmt: skip


def _voice(f: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Three harmonics of the per-sample pitch ``f (T,)``."""
    phase = 2 * math.pi * torch.cumsum(f.double() / sample_rate, 0)
    return (0.5 * phase.sin() + 0.3 * (2 * phase + 1).sin() + 0.2 * (3 * phase).sin()).float()


@pytest.mark.parametrize(("sample_rate", "hop", "f0"), [(8000, 64, 83.3), (8000, 64, 247.0),
                                                          (22050, 256, 110.0)])  # fmt: skip
def test_yin_finds_a_steady_pitch_to_two_cents(sample_rate, hop, f0) -> None:
    x = _voice(torch.full((sample_rate,), f0), sample_rate)
    estimate = Pitch(sample_rate, hop)(x[None])[0]
    assert estimate.shape == (1 + sample_rate // hop,)
    inner = estimate[4:-4]  # the reflect-padded edges may be unvoiced
    assert (inner > 0).all()
    assert (1200 * torch.log2(inner / f0)).abs().max() < 2.0


def test_yin_follows_a_glide_as_closely_as_librosa() -> None:
    sample_rate, hop = 8000, 64
    t = torch.arange(2 * sample_rate) / sample_rate
    f = 150 * (1 + 0.15 * torch.sin(2 * math.pi * 3 * t))
    x = _voice(f, sample_rate)
    ours = Pitch(sample_rate, hop)(x[None])[0].numpy()
    theirs = librosa.yin(x.numpy(), fmin=60, fmax=500, sr=sample_rate, frame_length=512,
                         hop_length=hop)  # fmt: skip
    truth = f[::hop].numpy()
    inner = slice(8, len(theirs) - 8)

    def cents(track: np.ndarray) -> float:
        return float(np.sqrt(np.mean((1200 * np.log2(track[inner] / truth[inner])) ** 2)))

    assert cents(ours) < 25 and cents(ours) < 2 * cents(theirs)


def test_noise_and_silence_are_unvoiced() -> None:
    pitch = Pitch(8000, 64)
    noise = 0.3 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    assert (pitch(noise) == 0).float().mean() > 0.95
    assert (pitch(torch.zeros(1, 8000)) == 0).all()


def test_a_pitch_range_beyond_a_quarter_of_the_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="pitch range"):
        Pitch(8000, 64, f_min=60, f_max=2500)


def test_the_excitation_has_the_pitch_and_only_audible_voiced_harmonics() -> None:
    source = HarmonicSource(4, 8000, 64)
    f0 = torch.tensor([[0.0, 100.0, 100.0, 100.0, 1500.0, 1500.0]])  # frame i centred at 64 i
    e = source(f0, 6 * 64)
    assert e.shape == (1, 4, 384) and source.channels == 4
    assert torch.equal(e[..., :32], torch.zeros(1, 4, 32))  # nearest to the unvoiced frame 0
    t = torch.arange(32, 193)
    expected = torch.sin(2 * math.pi * 100 * (t - 31) / 8000)  # the phase starts at the voicing
    assert torch.allclose(e[0, 0, 32:193], expected, atol=1e-5)
    fourth = torch.sin(4 * 2 * math.pi * 100 * (t - 31) / 8000)
    assert torch.allclose(e[0, 3, 32:193], fourth, atol=1e-4)
    assert e[0, 1, 256:].abs().max() > 0.9  # 3000 Hz: below Nyquist
    assert torch.equal(e[0, 2:, 256:], torch.zeros(2, 128))  # 4500 Hz and up: above it
    assert torch.equal(e, source(f0, 384))
    with pytest.raises(ValueError, match="cover fewer"):
        source(f0, 385)
    both = HarmonicSource(4, 8000, 64, quadrature=True)
    iq = both(f0, 384)
    assert iq.shape == (1, 8, 384) and both.channels == 8
    assert torch.equal(iq[:, :4], e)
    power = iq[0, 4:, 32:193].square() + e[0, :, 32:193].square()
    assert torch.allclose(power, torch.ones(4, 161))


def test_the_f0_is_interpolated_between_voiced_frames_and_angles_along_the_short_arc() -> None:
    f0 = torch.tensor([[0.0, 100.0, 200.0, 0.0]])
    f = upsample(f0, f0 > 0, 4, 16)
    expected = [0.0, 0, 100, 100, 100, 125, 150, 175, 200, 200, 0, 0, 0, 0, 0, 0]
    assert torch.equal(f[0], torch.tensor(expected))
    theta = torch.tensor([[6.0, 0.2, 0.0, 0.0]])  # 6.0 -> 0.2 crosses 2 pi: a step of +0.483
    angle = upsample(theta, torch.ones_like(f0, dtype=torch.bool), 4, 4, circular=True)[0]
    assert torch.allclose(angle, 6.0 + torch.arange(4) / 4 * (0.2 + 2 * math.pi - 6.0))
    assert torch.equal(upsample(theta, f0 > 0, 4, 16, circular=True)[0, :2], torch.full((2,), 6.0))


def test_the_phase_offset_locks_the_source_to_the_audios_fundamental() -> None:
    sample_rate, hop = 8000, 64
    t = torch.arange(sample_rate)
    x = 0.5 * torch.sin(2 * math.pi * 151 * (t + 1) / sample_rate + 1.0)  # 151 Hz, phase 1
    x = x + 0.3 * torch.sin(4 * math.pi * 151 * (t + 1) / sample_rate)
    f0 = torch.full((1, 126), 150.0)  # an f0 1 Hz off: the offset grows 2 pi a second
    theta = phase_offsets(x[None], f0, hop, sample_rate, 268)
    assert theta.shape == (1, 1, 126)
    centres = torch.arange(126) * hop + 1
    expected = (2 * math.pi * centres / sample_rate + 1.0).remainder(2 * math.pi)
    inner = slice(5, 120)
    wrapped = (theta[0, 0, inner] - expected[inner] + math.pi).remainder(2 * math.pi) - math.pi
    assert wrapped.abs().max() < 0.02
    source = HarmonicSource(1, sample_rate, hop)
    locked, free = source(f0, sample_rate, theta)[0, 0], source(f0, sample_rate)[0, 0]

    def correlation(e: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([e[400:-400], x[400:-400]]))[0, 1])

    assert correlation(locked) > 0.85  # the fundamental's share of x: 0.5 / sqrt(0.34)
    assert abs(correlation(free)) < 0.1
    unvoiced = phase_offsets(x[None], torch.zeros(1, 126), hop, sample_rate, 268)
    assert torch.equal(unvoiced, torch.zeros(1, 1, 126))


def test_aligned_phases_lock_each_harmonic_to_the_audios() -> None:
    """Harmonics at phases the fundamental's does not predict: each harmonic's own offset
    is read back, and the aligned source, weighted, rebuilds the audio."""
    sample_rate, hop, f = 8000, 64, 150.0
    t = torch.arange(sample_rate)
    amplitude, phases = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([1.0, 2.5, 5.6])
    k = torch.arange(1, 4)[:, None]
    x = (amplitude[:, None] * torch.sin(2 * math.pi * f * k * (t + 1) / sample_rate
                                        + phases[:, None])).sum(0)  # fmt: skip
    f0 = torch.full((1, 126), f)
    theta = phase_offsets(x[None], f0, hop, sample_rate, 268, n_harmonics=3)
    assert theta.shape == (1, 3, 126)
    inner = slice(5, 120)
    wrapped = (theta[0, :, inner] - phases[:, None] + math.pi).remainder(2 * math.pi) - math.pi
    assert wrapped.abs().max() < 0.02
    aligned = HarmonicSource(3, sample_rate, hop, aligned=True)
    assert aligned.phase_rows == 3 and HarmonicSource(3, sample_rate, hop).phase_rows == 1
    rebuilt = (aligned(f0, sample_rate, theta)[0] * amplitude[:, None]).sum(0)
    assert (rebuilt - x)[400:-400].abs().max() < 0.02
    fundamental = HarmonicSource(3, sample_rate, hop)(f0, sample_rate, theta[:, :1])[0]
    assert ((fundamental * amplitude[:, None]).sum(0) - x)[400:-400].abs().max() > 0.3


def test_the_pitched_mel_is_the_mel_with_f0_and_phase_rows() -> None:
    plain, pitched = (
        MelSpectrogram(8000, hop_length=64, n_mels=20, **MEL),
        PitchedMel(8000, hop_length=64, n_mels=20, f0_min=80.0, f0_max=400.0, **MEL),
    )
    x = _voice(torch.full((4096,), 200.0), 8000)
    mel = pitched(x)
    assert mel.shape == (22, 65) and pitched.channels == 22 and plain.channels == 20
    assert torch.equal(mel[:20], plain(x))
    assert (1200 * torch.log2(mel[20, 4:-4] / 200)).abs().max() < 2
    assert ((mel[21] >= 0) & (mel[21] < 2 * math.pi)).all()
    assert pitched.settings()["f0_min"] == 80.0
    aligned = PitchedMel(
        8000, hop_length=64, n_mels=20, f0_min=80.0, f0_max=400.0, n_phases=4, **MEL
    )
    assert aligned.channels == 25 and torch.equal(aligned(x)[:22], mel[:22])
    odd = Pitch(22050, 256, f_min=70.0)  # a frame of 3 x 315 samples: odd, centred all the same
    assert odd.frame_length % 2 == 1 and odd(torch.zeros(2, 4096)).shape == (2, 17)


def test_waveflow_reads_the_source_in_training_and_synthesis(tmp_path) -> None:
    torch.manual_seed(0)
    plain = waveflow(**SMALL)
    model = waveflow(**SMALL, source_harmonics=5)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 5 * 2 * 8 * 3 * 2  # K columns of every context conv: 2R out, 3 layers, 2 flows
    both = waveflow(**SMALL, source_harmonics=5, source_quadrature=True)
    count = sum(p.numel() for p in both.parameters())
    assert count - sum(p.numel() for p in model.parameters()) == extra
    x = _voice(torch.full((1024,), 180.0), 8000)[None].repeat(2, 1) * 0.3
    model(x).backward()
    net = next(m for m in model.modules() if isinstance(m, WaveNet2D))
    direction = max(net.context_convs[0].parameters(), key=torch.numel)  # v: (2R, 25, 1, 1)
    assert direction.grad[:, 20:].abs().sum() > 0  # the source's columns learn
    mel = model.mel(x[:1])
    assert mel.shape == (1, 22, 17)
    unlocked, unvoiced = mel.clone(), mel.clone()
    unlocked[:, -1], unvoiced[:, -2] = 0, 0
    assert not torch.equal(model.log_prob(x[:1], mel), model.log_prob(x[:1], unlocked))
    model.eval()  # synthesis runs the source free: the phase row is zeroed
    noise = torch.randn(1, 1024)
    y = model.synthesize(mel, 0.6, 1024, noise)
    assert torch.equal(y, model.synthesize(unlocked, 0.6, 1024, noise))
    assert not torch.allclose(y, model.synthesize(unvoiced, 0.6, 1024, noise))
    model.flow.to(torch.bfloat16)  # the f0 row stays float32: the excitation is unchanged
    assert model.synthesize(mel, 0.6, 1024, noise).dtype == torch.bfloat16
    np.save(tmp_path / "plain.npy", plain.mel(x[0]).numpy())
    with pytest.raises(ValueError, match=r"\(22, F\)"):
        read_mel_input(tmp_path / "plain.npy", model)


def test_an_aligned_source_reads_one_phase_row_per_harmonic_in_the_likelihood_only() -> None:
    torch.manual_seed(0)
    plain = waveflow(**SMALL, source_harmonics=5)
    model = waveflow(**SMALL, source_harmonics=5, source_aligned=True)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in plain.parameters()
    )  # the phases are the source's, not the nets'
    x = _voice(torch.full((1024,), 180.0), 8000)[None] * 0.3
    mel = model.mel(x)
    assert mel.shape == (1, 20 + 1 + 5, 17) and model.mel.channels == 26
    torch.testing.assert_close(mel[:, 21, 4:-4], plain.mel(x)[:, 21, 4:-4])  # the fundamental's
    shifted = mel.clone()
    shifted[:, 22] += 1.0  # the second harmonic's offset
    assert not torch.equal(model.log_prob(x, mel), model.log_prob(x, shifted))
    model.eval()  # the held-out likelihood reads them too; synthesis does not
    assert not torch.equal(model.log_prob(x, mel), model.log_prob(x, shifted))
    noise = torch.randn(1, 1024)
    assert torch.equal(
        model.synthesize(mel, 0.6, 1024, noise), model.synthesize(shifted, 0.6, 1024, noise)
    )
