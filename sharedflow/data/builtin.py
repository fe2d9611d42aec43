"""Built-in data, written on demand in the formats of the real datasets (no download).

``speech_corpus`` writes a speech-like corpus in the LJSpeech layout: each clip is a few
"syllables" of a voiced source whose pitch follows a smooth contour (a random base pitch
times ``1 + vibrato sin(2 pi r t)``, ``r`` 1-4 Hz, the voice's ``vibrato`` 0.15 by default),
filtered through three formant resonators, separated by noise bursts (fricatives) and short
pauses, over a faint room-noise floor (-66 dB below the peak, like a quiet recording: digital
silence would give a flow an unbounded density), at 22.05 kHz or the rate asked for, as 16-bit
PCM. It is deterministic in ``seed``. The voice is an object:

- ``GlottalPulses()`` (the default): one sharp pulse per period, 90-220 Hz. Between pulses
  the waveform is predictable from the last few samples; the pulse itself is predictable only
  from the previous period, so a vocoder's likelihood rewards pitch late in training.
- ``Harmonics()``: a band-limited sum of harmonics ``sum_k k^-1 sin(k phi)``, 120-250 Hz,
  smooth within each period, so that pitch shows in short-range prediction as well.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

__all__ = [
    "GlottalPulses",
    "Harmonics",
    "cache_dir",
    "shapes_dataset",
    "speech_corpus",
    "synthesize_utterance",
]

SHAPES = ("circle", "square", "triangle", "cross")

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


_VIBRATO = 0.15  # the voices' default pitch swing, +-15%


def _vibrato_suffix(vibrato: float) -> str:
    """Empty for the default swing, so that existing corpora keep their cache folders."""
    return "" if vibrato == _VIBRATO else f"-vibrato{vibrato:g}"


@dataclass(frozen=True)
class GlottalPulses:
    """One pulse per period through a one-pole glottal decay, plus 2% aspiration noise."""

    f0_min: float = 90.0
    f0_max: float = 220.0
    vibrato: float = _VIBRATO

    @property
    def name(self) -> str:
        """The cache folder's prefix (the default voice keeps the original corpus's)."""
        if (self.f0_min, self.f0_max, self.vibrato) == (90.0, 220.0, _VIBRATO):
            return "speech-v2"
        return f"speech-pulses-{self.f0_min:g}-{self.f0_max:g}" + _vibrato_suffix(self.vibrato)

    def __call__(self, rng: np.random.Generator, f0: np.ndarray, sample_rate: int) -> np.ndarray:
        """The source ``(n,)`` for a pitch contour ``f0 (n,)`` in Hz."""
        cycles = np.cumsum(f0) / sample_rate
        pulses = (np.diff(np.floor(cycles), prepend=0) > 0).astype(float)
        return lfilter([1.0], [1.0, -0.95], pulses) + 0.02 * rng.standard_normal(len(f0))


@dataclass(frozen=True)
class Harmonics:
    """``sum_k k^-rolloff sin(k phi)``, ``phi`` the pitch phase, over the harmonics below 0.45
    of the sample rate, plus aspiration noise 0.002."""

    f0_min: float = 120.0
    f0_max: float = 250.0
    rolloff: float = 1.0
    vibrato: float = _VIBRATO

    @property
    def name(self) -> str:
        suffix = _vibrato_suffix(self.vibrato)
        return f"speech-harmonics-{self.f0_min:g}-{self.f0_max:g}-{self.rolloff:g}{suffix}"

    def __call__(self, rng: np.random.Generator, f0: np.ndarray, sample_rate: int) -> np.ndarray:
        """The source ``(n,)`` for a pitch contour ``f0 (n,)`` in Hz."""
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        top = 0.45 * sample_rate
        source = sum(
            k**-self.rolloff * np.sin(k * phase) * (k * f0 < top)
            for k in range(1, int(top / f0.min()) + 2)
        )
        return source + 0.002 * rng.standard_normal(len(f0))


Voice = GlottalPulses | Harmonics
PULSES = GlottalPulses()  # the default voice


def synthesize_utterance(
    rng: np.random.Generator, sample_rate: int = 22050, voice: Voice = PULSES
) -> np.ndarray:
    """One speech-like clip, float32 in ``(-1, 1)``, 1 to 2.5 seconds."""
    pieces = []
    for _ in range(int(rng.integers(3, 7))):
        n = int(rng.uniform(0.12, 0.3) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(voice.f0_min, voice.f0_max) * (
            1 + voice.vibrato * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        )
        source = voice(rng, f0, sample_rate)
        formants = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.9, 1.1, 3)
        voiced = sum(
            _resonate(source, f, 80 + 40 * i, sample_rate)
            for i, f in enumerate(formants)
            if f < 0.45 * sample_rate
        )
        envelope = np.sin(np.pi * np.arange(n) / n) ** 0.5
        pieces.append(voiced * envelope)
        if rng.random() < 0.5:  # a fricative burst, below 0.4 of the sample rate
            m = int(rng.uniform(0.04, 0.1) * sample_rate)
            noise = rng.standard_normal(m)
            centre = min(rng.uniform(3000, 6000), 0.4 * sample_rate)
            noise = _resonate(noise, centre, min(1500, 0.1 * sample_rate), sample_rate)
            pieces.append(0.3 * noise * np.hanning(m))
        pieces.append(np.zeros(int(rng.uniform(0.02, 0.08) * sample_rate)))
    audio = np.concatenate(pieces)
    audio = audio / (np.abs(audio).max() + 1e-9)
    floor = lfilter([1.0], [1.0, -0.7], rng.standard_normal(len(audio)))  # a pinkish hum
    audio += 5e-4 * floor / floor.std()
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def speech_corpus(
    root: str | Path | None = None,
    n_clips: int = 48,
    sample_rate: int = 22050,
    seed: int = 0,
    voice: Voice = PULSES,
) -> Path:
    """Write (once) and return an LJSpeech-layout corpus of ``n_clips`` clips."""
    root = (
        Path(root)
        if root is not None
        else cache_dir() / f"{voice.name}-{n_clips}-{sample_rate}-{seed}"
    )

    def write(folder: Path) -> None:
        (folder / "wavs").mkdir()
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(n_clips):
            name = f"SF{i // 100 + 1:03d}-{i % 100 + 1:04d}"
            sf.write(
                folder / "wavs" / f"{name}.wav",
                synthesize_utterance(rng, sample_rate, voice),
                sample_rate,
                subtype="PCM_16",
            )
            rows.append(f"{name}|synthetic utterance {i}|synthetic utterance {i}")
        (folder / "metadata.csv").write_text("\n".join(rows) + "\n")

    return _write_once(root, "metadata.csv", write)


def _write_once(root: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """``root``, complete once it holds ``marker``; else written by ``write(folder)`` into a
    new folder beside it, which is then renamed to ``root`` in one step. Writers take turns
    (an exclusive ``flock`` beside ``root``), so runs started together on a fresh machine write
    it once and none reads a part: the others wait, then find it complete. A part left by an
    interrupted writer of an earlier version (no ``marker``) is replaced."""
    if (root / marker).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{root.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (root / marker).is_file():
            return root  # written while this one waited
        folder = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            write(folder)
            if root.exists():
                shutil.rmtree(root)
            folder.rename(root)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return root


def _shape_mask(kind: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - cx, y - cy
    if kind == "circle":
        return dx**2 + dy**2 <= radius**2
    if kind == "square":
        return (np.abs(dx) <= radius * 0.8) & (np.abs(dy) <= radius * 0.8)
    if kind == "triangle":
        return (dy <= radius * 0.7) & (dy >= -radius + 2 * np.abs(dx))
    return ((np.abs(dx) <= radius * 0.3) | (np.abs(dy) <= radius * 0.3)) & (
        np.maximum(np.abs(dx), np.abs(dy)) <= radius
    )


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3)`` floats: stripes of a random angle, period (3 to 8 pixels) and dark
    colour, ``c (0.6 + 0.4 s)`` with ``s`` in [0, 1], plus grain of deviation 0.03."""
    y, x = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
    stripes = 0.5 + 0.5 * np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    background = rng.uniform(0.1, 0.5, 3) * (0.6 + 0.4 * stripes[..., None])
    return background + 0.03 * rng.standard_normal((size, size, 3))


def draw_shape(rng: np.random.Generator, kind: str | None, size: int) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image: a coloured shape on a striped, noisy background, or
    (``kind`` None) the background alone."""
    image = _background(rng, size)
    if kind is not None:
        radius = rng.uniform(0.22, 0.38) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        image[_shape_mask(kind, size, cx, cy, radius)] = rng.uniform(0.55, 1.0, 3)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def shapes_dataset(
    root: str | Path | None = None, n_per_class: int = 64, size: int = 16, seed: int = 0
) -> Path:
    """Write (once) and return a class-per-folder tree of PNG shapes, one class per shape."""
    from PIL import Image

    root = Path(root) if root is not None else cache_dir() / f"shapes-{n_per_class}-{size}-{seed}"

    def write(folder: Path) -> None:
        rng = np.random.default_rng(seed)
        for kind in SHAPES:
            (folder / kind).mkdir()
            for i in range(n_per_class):
                Image.fromarray(draw_shape(rng, kind, size)).save(folder / kind / f"{i:04d}.png")
        (folder / ".complete").write_text("ok\n")

    return _write_once(root, ".complete", write)
