"""Built-in data, written on demand in the formats of the real datasets (no download).

``speech_corpus`` writes a speech-like corpus in the LJSpeech layout: each clip is a few
"syllables" of a voiced source (a glottal pulse train whose pitch follows a smooth contour)
filtered through three time-varying formant resonators, separated by noise bursts
(fricatives) and short pauses, at 22.05 kHz, as 16-bit PCM. It is deterministic in ``seed``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

__all__ = ["cache_dir", "speech_corpus", "synthesize_utterance"]

# (F1, F2, F3) in Hz of a few vowels.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [640, 1190, 2390]]
)


def cache_dir() -> Path:
    """Where built-in data is written: ``$SHAREDFLOW_CACHE`` or ``~/.cache/sharedflow``."""
    return Path(os.environ.get("SHAREDFLOW_CACHE", Path.home() / ".cache" / "sharedflow"))


def _resonate(x: np.ndarray, freq: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / sample_rate)
    theta = 2 * np.pi * freq / sample_rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1 - r], a, x)


def synthesize_utterance(rng: np.random.Generator, sample_rate: int = 22050) -> np.ndarray:
    """One speech-like clip, float32 in ``(-1, 1)``, 1 to 2.5 seconds."""
    pieces = []
    for _ in range(int(rng.integers(3, 7))):
        n = int(rng.uniform(0.12, 0.3) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = np.cumsum(f0) / sample_rate
        source = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)  # one pulse per period
        source = lfilter([1.0], [1.0, -0.95], source) + 0.02 * rng.standard_normal(n)
        formants = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.9, 1.1, 3)
        voiced = sum(
            _resonate(source, f, 80 + 40 * i, sample_rate) for i, f in enumerate(formants)
        )
        envelope = np.sin(np.pi * np.arange(n) / n) ** 0.5
        pieces.append(voiced * envelope)
        if rng.random() < 0.5:  # a fricative burst
            m = int(rng.uniform(0.04, 0.1) * sample_rate)
            noise = _resonate(rng.standard_normal(m), rng.uniform(3000, 6000), 1500, sample_rate)
            pieces.append(0.3 * noise * np.hanning(m))
        pieces.append(np.zeros(int(rng.uniform(0.02, 0.08) * sample_rate)))
    audio = np.concatenate(pieces)
    return (0.5 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def speech_corpus(
    root: str | Path | None = None, n_clips: int = 48, sample_rate: int = 22050, seed: int = 0
) -> Path:
    """Write (once) and return an LJSpeech-layout corpus of ``n_clips`` clips."""
    root = (
        Path(root) if root is not None else cache_dir() / f"speech-{n_clips}-{sample_rate}-{seed}"
    )
    if (root / "metadata.csv").is_file():
        return root
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_clips):
        name = f"SF{i // 100 + 1:03d}-{i % 100 + 1:04d}"
        sf.write(
            root / "wavs" / f"{name}.wav",
            synthesize_utterance(rng, sample_rate),
            sample_rate,
            subtype="PCM_16",
        )
        rows.append(f"{name}|synthetic utterance {i}|synthetic utterance {i}")
    tmp = root / "metadata.csv.tmp"
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(root / "metadata.csv")  # written last: its presence marks a complete corpus
    return root
