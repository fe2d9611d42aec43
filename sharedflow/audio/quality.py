"""Resynthesis quality: how far vocoded audio is from the input it was made from.

Every metric takes the reference and the estimate as time-aligned ``(T,)`` float tensors at
the model's sample rate.

- ``mrstft``, multi-resolution STFT distance (Yamamoto et al. 2020): over FFT sizes
  512/1024/2048 (hops 128/256/512), the mean of spectral convergence
  ``|| |Y| - |X| ||_F / || |X| ||_F`` and the L1 distance of log magnitudes. 0 when identical.
- ``mcd_db``, mel-cepstral distortion (Kubichek 1993) in dB:
  ``(10 / ln 10) sqrt(2 sum_{d=1}^{24} (c_d - c'_d)^2)`` per frame, averaged over frames,
  with ``c`` the mel-cepstrum of the log amplitude spectrum (natural log; frequency-warped by
  the all-pass constant ``alpha`` of the sample rate, as SPTK's ``freqt``; 5 ms frames). It is
  the RMS difference of the two cepstrally smoothed log spectra in dB, ``c_0`` (the gain) left
  out, so a louder copy scores 0.
- ``log_mel_l1``: mean ``|ln mel(X) - ln mel(Y)|`` over 80 mel bands (magnitudes floored at
  1e-5).
- ``periodicity``: RMS difference of pYIN's per-frame voicing probability (CARGAN's
  periodicity error), 0 to 1; ``f0_cents``: RMS pitch error in cents over the frames voiced in
  both (nan when there are none).
- ``pesq``: wide-band PESQ (ITU-T P.862.2, the ``pesq`` package) at 16 kHz, -0.5 to 4.64.
- ``stoi``: short-time objective intelligibility (the ``pystoi`` package), 0 to 1.
"""

from __future__ import annotations

import functools
import math

import librosa
import numpy as np
import torch
from torch import Tensor

from sharedflow.core.metrics import METRICS, Metric

__all__ = [
    "METRICS",
    "Metric",
    "QualityError",
    "log_mel_l1",
    "mel_cepstral_distortion",
    "multi_resolution_stft",
    "periodicity_error",
    "pesq_wideband",
    "resynthesis_scores",
    "short_time_intelligibility",
]

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
# SPTK's all-pass constants that approximate the mel scale, by sample rate.
MEL_ALPHA = {8000: 0.312, 11025: 0.357, 16000: 0.41, 22050: 0.455, 24000: 0.466, 32000: 0.504,
             44100: 0.544, 48000: 0.554}  # fmt: skip


class QualityError(ValueError):
    """A signal that a metric cannot score (too short, silent, or a missing package)."""


def multi_resolution_stft(reference: Tensor, estimate: Tensor) -> float:
    """Mean over resolutions of spectral convergence + log-magnitude L1; 0 for identical audio."""
    total = 0.0
    for n_fft, hop in RESOLUTIONS:
        window = torch.hann_window(n_fft, dtype=reference.dtype)
        spec = [
            torch.stft(a, n_fft, hop, window=window, return_complex=True).abs().clamp(1e-7)
            for a in (reference, estimate)
        ]
        convergence = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0])
        log_distance = (spec[0].log() - spec[1].log()).abs().mean()
        total += float(convergence + log_distance)
    return total / len(RESOLUTIONS)


@functools.lru_cache(maxsize=8)
def _warp_matrix(n_in: int, order: int, alpha: float) -> np.ndarray:
    """SPTK's ``freqt`` as a matrix ``(order + 1, n_in)``: cepstrum to warped cepstrum."""
    b = 1 - alpha * alpha
    c1 = np.eye(n_in)  # column k: the unit cepstrum e_k
    c2 = np.zeros((order + 1, n_in))
    for i in range(n_in - 1, -1, -1):
        d = c2.copy()
        c2[0] = c1[i] + alpha * d[0]
        if order >= 1:
            c2[1] = b * d[0] + alpha * d[1]
        for j in range(2, order + 1):
            c2[j] = d[j - 1] + alpha * (d[j] - c2[j - 1])
    return c2


def mel_cepstrum(
    audio: np.ndarray, sample_rate: int, order: int = 24, alpha: float | None = None
) -> np.ndarray:
    """Mel-cepstra ``(frames, order + 1)`` of the log amplitude spectrum, one-sided
    (``ln|X(w~)| = c_0 + sum_m c_m cos(m w~)`` on the warped frequency axis ``w~``)."""
    alpha = MEL_ALPHA.get(sample_rate, 0.455) if alpha is None else alpha
    n_fft = 1024 if sample_rate <= 24000 else 2048
    hop = max(1, round(0.005 * sample_rate))
    spec = np.abs(librosa.stft(audio.astype(np.float64), n_fft=n_fft, hop_length=hop))
    log_amp = np.log(np.maximum(spec, 1e-5)).T  # (frames, n_fft // 2 + 1)
    real = np.fft.irfft(log_amp, n=n_fft, axis=1)[:, : n_fft // 2]  # two-sided real cepstrum
    real[:, 1:] *= 2  # one-sided (minimum-phase) convention
    n_in = min(real.shape[1], 8 * (order + 1))  # warping needs only the low quefrencies
    return real[:, :n_in] @ _warp_matrix(n_in, order, float(alpha)).T


def mel_cepstral_distortion(
    reference: Tensor, estimate: Tensor, sample_rate: int, alpha: float | None = None
) -> float:
    """MCD in dB between two aligned signals of the same length (see the module doc)."""
    c = [mel_cepstrum(a.double().numpy(), sample_rate, alpha=alpha) for a in (reference, estimate)]
    diff = c[0][:, 1:] - c[1][:, 1:]
    return float(np.mean(10 / math.log(10) * np.sqrt(2 * (diff**2).sum(1))))


def log_mel_l1(reference: Tensor, estimate: Tensor, sample_rate: int) -> float:
    """Mean absolute difference of natural-log mel magnitudes (80 bands, 1024-point STFT)."""
    mels = [
        np.log(
            np.maximum(
                librosa.feature.melspectrogram(
                    y=a.double().numpy(), sr=sample_rate, n_fft=1024, hop_length=256, power=1.0,
                    n_mels=80,
                ),
                1e-5,
            )
        )
        for a in (reference, estimate)
    ]  # fmt: skip
    return float(np.abs(mels[0] - mels[1]).mean())


def _pyin(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN pitch (Hz, nan when unvoiced) and voicing probability per frame, at 16 kHz."""
    audio16 = librosa.resample(audio, orig_sr=sample_rate, target_sr=16000)
    f0, _, probability = librosa.pyin(
        audio16, fmin=50, fmax=500, sr=16000, frame_length=1024, hop_length=160
    )
    return f0, probability


@functools.lru_cache(maxsize=64)
def _reference_pyin(audio: bytes, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``_pyin`` of a float64 signal given as bytes, kept: every model compared on a held-out
    set is scored against the same references."""
    return _pyin(np.frombuffer(audio, dtype=np.float64), sample_rate)


def periodicity_error(reference: Tensor, estimate: Tensor, sample_rate: int) -> dict[str, float]:
    """``periodicity``: RMS difference of voicing probabilities; ``f0_cents``: RMS pitch error
    in cents over frames voiced in both signals."""
    f0_ref, p_ref = _reference_pyin(reference.double().numpy().tobytes(), sample_rate)
    f0_est, p_est = _pyin(estimate.double().numpy(), sample_rate)
    voiced = np.isfinite(f0_ref) & np.isfinite(f0_est)
    cents = 1200 * np.log2(f0_est[voiced] / f0_ref[voiced]) if voiced.any() else np.array([])
    return {
        "periodicity": float(np.sqrt(np.mean((p_ref - p_est) ** 2))),
        "f0_cents": float(np.sqrt(np.mean(cents**2))) if len(cents) else float("nan"),
    }


def pesq_wideband(reference: Tensor, estimate: Tensor, sample_rate: int) -> float:
    """Wide-band PESQ of the estimate against the reference, both resampled to 16 kHz."""
    try:
        from pesq import NoUtterancesError, PesqError, pesq
    except ImportError as error:
        raise QualityError(
            "PESQ needs the pesq package: pip install 'sharedflow[quality]'"
        ) from error
    ref, est = (
        librosa.resample(a.double().numpy(), orig_sr=sample_rate, target_sr=16000)
        for a in (reference, estimate)
    )
    try:
        return float(pesq(16000, ref, est, "wb"))
    except (NoUtterancesError, PesqError) as error:
        raise QualityError(f"PESQ cannot score this signal ({error})") from error


def short_time_intelligibility(reference: Tensor, estimate: Tensor, sample_rate: int) -> float:
    """STOI (Taal et al. 2011) of the estimate against the reference."""
    try:
        from pystoi import stoi
    except ImportError as error:
        raise QualityError("STOI needs pystoi: pip install 'sharedflow[quality]'") from error
    return float(stoi(reference.double().numpy(), estimate.double().numpy(), sample_rate))


def resynthesis_scores(reference: Tensor, estimate: Tensor, sample_rate: int) -> dict[str, float]:
    """Every resynthesis metric of one aligned pair ``(T,)``, by name (see ``METRICS``)."""
    if reference.shape != estimate.shape:
        raise QualityError(
            f"reference and estimate differ in length: {tuple(reference.shape)} and "
            f"{tuple(estimate.shape)}"
        )
    if len(reference) < 2048:
        raise QualityError(f"a clip of {len(reference)} samples is too short to score (2048)")
    reference, estimate = reference.detach().double().cpu(), estimate.detach().double().cpu()
    # PESQ and pYIN both work at 16 kHz: resample once for the two.
    ref16, est16 = (
        torch.from_numpy(librosa.resample(a.numpy(), orig_sr=sample_rate, target_sr=16000))
        for a in (reference, estimate)
    )
    return {
        "pesq": pesq_wideband(ref16, est16, 16000),
        "stoi": short_time_intelligibility(reference, estimate, sample_rate),
        "mcd_db": mel_cepstral_distortion(reference, estimate, sample_rate),
        "mrstft": multi_resolution_stft(reference, estimate),
        "log_mel_l1": log_mel_l1(reference, estimate, sample_rate),
        **periodicity_error(ref16, est16, 16000),
    }
