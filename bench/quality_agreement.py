"""sharedflow's resynthesis metrics against the packages that define them, clip by clip.

REF holds reference clips, EST their resyntheses under the same file names (for example
``sharedflow synthesize RUN REF/*.wav --out EST``). For each pair it computes, from the wav
files as written:

- PESQ: ``pesq.pesq(16000, ref, est, "wb")`` on librosa's 16 kHz resampling;
- STOI: ``pystoi.stoi(ref, est, sample_rate)``;
- MCD: SPTK's mel-cepstrum (``pysptk.sp2mc``: order 24, the sample rate's all-pass constant)
  of the power spectra of the same 5 ms STFT frames, ``(10 / ln 10) sqrt(2 sum_{d>=1} dc_d^2)``
  averaged over frames;

and the same three from ``sharedflow.audio.quality``, then prints both, their relative
differences, and (for reference only, not compared) the MCD of WORLD's spectral envelope
(``pyworld`` CheapTrick at 5 ms, the same SPTK mel-cepstrum), the analysis many papers use,
which drops the harmonic fine structure that the STFT keeps.

    pip install pysptk pyworld "setuptools<81"   # pysptk 1.0 imports pkg_resources
    python bench/quality_agreement.py REF EST
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import librosa
import numpy as np
import pysptk
import pyworld
import soundfile as sf
import torch
from pesq import pesq
from pystoi import stoi

from sharedflow.audio.quality import (
    MEL_ALPHA,
    mel_cepstral_distortion,
    pesq_wideband,
    short_time_intelligibility,
)

ORDER = 24


def _mcd(ref_mc: np.ndarray, est_mc: np.ndarray) -> float:
    diff = ref_mc[:, 1:] - est_mc[:, 1:]
    return float(np.mean(10 / math.log(10) * np.sqrt(2 * (diff**2).sum(1))))


def sptk_mcd(ref: np.ndarray, est: np.ndarray, rate: int) -> float:
    """SPTK's mel-cepstra of 1024-point Hann STFT frames every 5 ms (amplitudes floored at
    1e-5, as sharedflow's)."""
    alpha = MEL_ALPHA[rate]
    hop = round(0.005 * rate)
    mc = [
        pysptk.sp2mc(
            np.maximum(np.abs(librosa.stft(a, n_fft=1024, hop_length=hop)), 1e-5).T ** 2,
            ORDER,
            alpha,
        )
        for a in (ref, est)
    ]
    return _mcd(*mc)


def world_mcd(ref: np.ndarray, est: np.ndarray, rate: int) -> float:
    """SPTK's mel-cepstra of WORLD's spectral envelope, on the reference's pitch track."""
    f0, times = pyworld.harvest(ref, rate, frame_period=5.0)
    mc = [
        pysptk.sp2mc(pyworld.cheaptrick(a, f0, times, rate), ORDER, MEL_ALPHA[rate])
        for a in (ref, est)
    ]
    return _mcd(*mc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ref", type=Path)
    parser.add_argument("est", type=Path)
    args = parser.parse_args()
    rows = []
    for ref_path in sorted(args.ref.glob("*.wav")):
        ref, rate = sf.read(ref_path, dtype="float64")
        est, est_rate = sf.read(args.est / ref_path.name, dtype="float64")
        if est_rate != rate or len(est) != len(ref):
            raise SystemExit(f"{ref_path.name}: {len(est)} samples at {est_rate} Hz in EST, "
                             f"{len(ref)} at {rate} Hz in REF")  # fmt: skip
        ref16, est16 = (librosa.resample(a, orig_sr=rate, target_sr=16000) for a in (ref, est))
        ours_ref, ours_est = torch.from_numpy(ref), torch.from_numpy(est)
        rows.append(
            (
                ref_path.name,
                (pesq(16000, ref16, est16, "wb"), pesq_wideband(ours_ref, ours_est, rate)),
                (stoi(ref, est, rate), short_time_intelligibility(ours_ref, ours_est, rate)),
                (sptk_mcd(ref, est, rate), mel_cepstral_distortion(ours_ref, ours_est, rate)),
                world_mcd(ref, est, rate),
            )
        )
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    print("| clip | PESQ pesq | ours | STOI pystoi | ours | MCD SPTK | ours | MCD WORLD |")
    print("|---|---|---|---|---|---|---|---|")
    for name, *pairs, world in rows:
        cells = " | ".join(f"{a:.3f} | {b:.3f}" for a, b in pairs)
        print(f"| {name} | {cells} | {world:.2f} |")
    means = [tuple(np.mean([r[i][j] for r in rows]) for j in (0, 1)) for i in (1, 2, 3)]
    cells = " | ".join(f"{a:.3f} | {b:.3f}" for a, b in means)
    print(f"| mean | {cells} | {np.mean([r[4] for r in rows]):.2f} |")
    for label, i in (("PESQ", 1), ("STOI", 2), ("MCD", 3)):
        worst = max(abs(r[i][1] - r[i][0]) / abs(r[i][0]) for r in rows)
        print(f"{label}: largest relative difference per clip {100 * worst:.2f}%")


if __name__ == "__main__":
    main()
