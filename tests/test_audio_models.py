"""Vocoders: reference parameter counts, round trips, the fast inverse, deploy form."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sharedflow.layers.autoregressive import CausalNet
from sharedflow.models import Vocoder, waveflow, waveflow_parakeet, waveglow
from sharedflow.nets import WaveNet2D
from sharedflow.sharing import count_parameters, deploy

# (builder, training count, deploy count), from shared/reference/audio.md section e.
REFERENCE_COUNTS: dict[str, tuple[Callable[[], Vocoder], int, int]] = {
    "waveglow": (waveglow, 87_879_272, 87_731_816),
    "waveflow-parakeet-h16-r64": (lambda: waveflow_parakeet(16, 64), 5_950_164, 5_925_074),
    "waveflow-parakeet-h16-r128": (lambda: waveflow_parakeet(16, 128), 22_385_876, 22_335_698),
    "waveflow-h16-r64": (lambda: waveflow(16, 64), 5_950_180, 5_925_090),
    "waveflow-h16-r128": (lambda: waveflow(16, 128), 22_385_892, 22_335_714),
    "nanoflow-naive-h16-r128": (lambda: waveflow(16, 128, sharing="shared"), 2_798_408, 2_792_134),
    "nanoflow-decomp-h16-r128": (
        lambda: waveflow(16, 128, sharing="decomposed"),
        2_800_228,
        2_793_954,
    ),
    "nanoflow-h16-r128-emb512": (
        lambda: waveflow(16, 128, sharing="nanoflow", embedding_dim=512),
        3_865_188,
        2_818_530,
    ),
    "nanoflow-h16-r128-emb1024-f16": (
        lambda: waveflow(16, 128, n_flows=16, sharing="nanoflow", embedding_dim=1024),
        4_936_324,
        2_845_186,
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_reference_parameter_counts(name: str) -> None:
    build, training, deployed = REFERENCE_COUNTS[name]
    model = build()
    assert count_parameters(model).total == training
    assert count_parameters(deploy(model)).total == deployed


def test_nanoflow_breakdown_matches_the_reference() -> None:
    count = count_parameters(waveflow(16, 128, sharing="nanoflow", embedding_dim=512))
    assert count.shared == 3_850_624
    assert count.embedding == 8 * 512
    assert count.per_step == (1_284,) * 8
    assert count.other == 196  # the upsampler


TINY_MELS = 8

TINY: dict[str, Callable[[], Vocoder]] = {
    "waveflow": lambda: waveflow(4, 6, 3, 3, dilation_cycle=2, n_mels=TINY_MELS),
    "waveflow-bipartize": lambda: waveflow(4, 6, 2, 4, permutation="bipartize", n_mels=TINY_MELS),
    "waveflow-parakeet": lambda: waveflow_parakeet(4, 6, 2, 2, n_mels=TINY_MELS),
    "waveflow-one-column": lambda: waveflow(None, 6, 3, 2, dilation_cycle=3, n_mels=TINY_MELS),
    "nanoflow-waveflow": lambda: waveflow(
        4, 6, 2, 3, sharing="nanoflow", embedding_dim=5, n_mels=TINY_MELS
    ),
    "waveglow": lambda: waveglow(6, 8, 2, 2, 8, 2, n_mels=TINY_MELS, upsample_kernel=512),
    "waveglow-alternating": lambda: waveglow(
        6, 8, 2, 2, 8, 2, n_mels=TINY_MELS, upsample_kernel=512, alternate_halves=True
    ),
    "nanoflow-waveglow": lambda: waveglow(
        6, 8, 2, 2, 8, 2, sharing="nanoflow", embedding_dim=4, n_mels=TINY_MELS
    ),
    "decomposed-waveglow": lambda: waveglow(6, 8, 2, 2, 8, 2, sharing="decomposed", n_mels=8),
}


def _tiny(name: str, dtype: torch.dtype = torch.float64) -> Vocoder:
    torch.manual_seed(0)
    model = TINY[name]().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_vocoder_round_trips_in_float64(name: str) -> None:
    model = _tiny(name)
    audio = 0.3 * torch.randn(2, 1024, dtype=torch.float64)
    mel = model.mel(audio)
    z, logdet = model.flow(audio, mel)
    assert z.shape == audio.shape
    x, inverse_logdet = model.flow.transform.inverse(z, model.flow.encode(mel, audio.shape))
    assert torch.allclose(x, audio, atol=1e-8)
    assert torch.allclose(logdet, -inverse_logdet, atol=1e-8)
    assert torch.isfinite(model.nll(audio)).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_vocoder_synthesizes_hop_times_frames(name: str) -> None:
    model = _tiny(name, torch.float32)
    audio = model.synthesize(torch.randn(2, TINY_MELS, 5) - 3, temperature=0.6)
    assert audio.shape == (2, 5 * 256) and torch.isfinite(audio).all()


@pytest.mark.parametrize(
    "name", ["waveflow", "nanoflow-waveflow", "waveflow-parakeet", "waveflow-one-column"]
)
def test_fast_inverse_equals_the_plain_inverse_in_float32(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny(name, torch.float32)
    mel = torch.randn(1, TINY_MELS, 6) - 3
    torch.manual_seed(1)
    fast = model.synthesize(mel)
    monkeypatch.setattr(WaveNet2D, "init_cache", CausalNet.init_cache)
    monkeypatch.setattr(WaveNet2D, "step", CausalNet.step)
    torch.manual_seed(1)
    plain = model.synthesize(mel)
    assert torch.allclose(fast, plain, atol=1e-4)


@pytest.mark.parametrize("name", sorted(TINY))
def test_deploy_form_gives_the_same_likelihood(name: str) -> None:
    model = _tiny(name)
    audio = 0.3 * torch.randn(2, 1024, dtype=torch.float64)
    assert torch.allclose(deploy(model).log_prob(audio), model.log_prob(audio), atol=1e-9)


def test_shared_waveglow_needs_equal_widths() -> None:
    with pytest.raises(ValueError, match="same width"):
        waveglow(4, 8, 2, 2, 8, 2, sharing="shared", n_mels=TINY_MELS)
    model = waveglow(4, 8, 0, 2, 8, 2, sharing="shared", n_mels=TINY_MELS)
    assert len(count_parameters(model).per_step) == 4


def test_audio_length_must_fit_the_fold() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        _tiny("waveflow").log_prob(torch.zeros(1, 1022, dtype=torch.float64))


def test_a_one_column_waveflow_takes_any_length_and_is_local() -> None:
    """``h = T``: no fold to fit, and the latent away from the clip's end does not depend on
    where the clip ends (each net sees only its receptive field), which is why a model trained
    on segments can synthesise a whole clip as one column."""
    model = _tiny("waveflow-one-column")
    audio = 0.3 * torch.randn(1, 2048, dtype=torch.float64)
    mel = model.mel(audio)
    z, _ = model.flow(audio, mel)
    z_cut, _ = model.flow(audio[:, :1022], mel[..., :5])  # 5 frames cover 1280 samples
    assert torch.allclose(z_cut[:, :700], z[:, :700], atol=1e-10)
    assert not torch.allclose(z_cut[:, 1000:], z[:, 1000:1022])
    with pytest.raises(ValueError, match="flips its rows"):
        waveflow(None, 6, 2, 2, permutation="bipartize", n_mels=TINY_MELS)


def test_default_temperatures_are_the_references() -> None:
    assert waveglow(4, 8, 2, 2, 8, 2, n_mels=TINY_MELS).temperature == 0.6
    assert waveflow(4, 6, 2, 2, n_mels=TINY_MELS).temperature == 1.0


# -- the real-valued STFT pair, the denoiser built on it, synthesis from given noise ----------
@pytest.mark.parametrize(("n_fft", "hop", "win"), [(1024, 256, 1024), (800, 200, 600)])
def test_the_convolution_stft_equals_torch_stft_and_inverts(
    n_fft: int, hop: int, win: int
) -> None:
    from sharedflow.audio.stft import STFT

    x = torch.randn(2, 5000, dtype=torch.float64)
    stft = STFT(n_fft, hop, win).double()  # its kernels are float32: agreement to ~1e-6
    real, imag = stft(x)
    window = torch.hann_window(win, dtype=torch.float64)
    expected = torch.stft(x, n_fft, hop, win, window, return_complex=True)
    assert torch.allclose(real, expected.real, atol=1e-5)
    assert torch.allclose(imag, expected.imag, atol=1e-5)
    back = stft.inverse(real, imag, 5000)
    inverse = torch.istft(expected, n_fft, hop, win, window, length=5000)
    assert torch.allclose(back, inverse, atol=1e-6)
    assert torch.allclose(back, x, atol=1e-6)


def test_the_denoiser_keeps_audio_at_strength_zero_and_removes_the_bias_spectrum() -> None:
    from sharedflow.audio.denoise import Denoiser

    torch.manual_seed(0)
    model = waveflow(height=4, channels=8, n_layers=2, n_flows=2, n_mels=8).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    denoiser = Denoiser(model)
    audio = model.synthesize(torch.zeros(1, 8, 20), temperature=0.0)  # bias spectrum only
    assert torch.allclose(denoiser(audio, 0.0), audio, atol=1e-5)
    assert denoiser(audio, 1.0).square().mean() < 0.1 * audio.square().mean()


def test_synthesis_from_given_noise_equals_a_seeded_draw() -> None:
    torch.manual_seed(0)
    model = waveflow(height=4, channels=8, n_layers=2, n_flows=2, n_mels=8).eval()
    mel = torch.randn(2, 8, 5)
    torch.manual_seed(3)
    drawn = model.synthesize(mel, 0.7)
    torch.manual_seed(3)
    noise = torch.randn(2, 256 * 5)
    assert torch.allclose(model.synthesize(mel, 0.7, noise=noise), drawn)
    with pytest.raises(ValueError, match=r"need \(2, 1280\)"):
        model.synthesize(mel, 0.7, noise=noise[:, :1000])


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs CUDA"))],
)  # fmt: skip
def test_graphed_decode_equals_decode_and_checks_its_shapes(device: str) -> None:
    from sharedflow.audio.graphed import GraphedDecode

    torch.manual_seed(0)
    model = deploy(waveflow(4, 8, 2, 2)).to(device)
    mel, z = torch.randn(2, 80, 3, device=device) - 5, torch.randn(2, 768, device=device)
    graphed = GraphedDecode(model, 2, 3)
    assert (graphed.graph is not None) == (device == "cuda")
    with torch.inference_mode():
        expected = model.decode(mel, z)
    torch.testing.assert_close(graphed(mel, z), expected)
    torch.testing.assert_close(graphed(mel, 0.5 * z), model.decode(mel, 0.5 * z))  # replayed
    with pytest.raises(ValueError, match="captured for mel"):
        graphed(mel[:1], z[:1])


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs CUDA"))],
)  # fmt: skip
def test_inputs_are_read_onto_the_vocoders_device(device: str, tmp_path: Path) -> None:
    """``synthesize --device cuda``: a wav's mel is taken on the model's device, and a mel file
    is moved there, so the front end's window and the audio meet on one device."""
    import numpy as np
    import soundfile

    from sharedflow.audio.io import read_mel_input

    model = deploy(waveflow(4, 8, 2, 2)).to(device)
    soundfile.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(4096),
                    model.sample_rate)  # fmt: skip
    np.save(tmp_path / "m.npy", np.zeros((80, 5), np.float32) - 5)
    for name in ("a.wav", "m.npy"):
        [(mel, length)] = read_mel_input(tmp_path / name, model)
        assert mel.device.type == device and mel.shape[0] == 80
        assert model.synthesize(mel[None], 0.5, length).shape == (1, length)
