"""Audio datasets: the LJSpeech layout, plain folders, and file lists.

Every file is checked when the dataset is built (header only, so it is quick): an unreadable,
empty or wrongly sampled file is an error naming it, unless ``skip_bad`` is set, in which case
bad files are counted, reported and left out. Stereo is mixed down with a warning. A wrong sample
rate is an error naming the file and both rates unless ``resample`` is set (librosa).

The reference split is available: sorted by name, the first ``n_test`` clips (1310 for
LJSpeech) are the test set and the rest train.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

__all__ = ["AudioClips", "AudioError", "AudioSegments", "list_audio", "load_audio"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
Split = Literal["train", "test", "all"]


class AudioError(ValueError):
    """A problem with an audio file or dataset; the message names the file."""


def list_audio(source: str | Path) -> list[Path]:
    """Audio files of an LJSpeech directory, a folder (recursive) or a file list, sorted by name.

    LJSpeech: ``source/metadata.csv`` lists ids whose files are ``source/wavs/<id>.wav``. A file
    list is a text file with one path per line, relative to the list's folder.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"no such audio source: {source}")
    if source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines()]
        files = [source.parent / line for line in lines if line and not line.startswith("#")]
    elif (source / "metadata.csv").is_file() and (source / "wavs").is_dir():
        ids = [row.split("|", 1)[0] for row in (source / "metadata.csv").read_text().splitlines()]
        files = [source / "wavs" / f"{name}.wav" for name in ids if name]
    else:
        files = [p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES]
    files = sorted(files, key=lambda p: p.name)
    if not files:
        raise AudioError(f"{source}: no audio files found")
    return files


def _wav_shortfall(path: Path) -> int:
    """Bytes a WAV file's ``data`` chunk declares but lacks (libsndfile reads such files short)."""
    with path.open("rb") as f:
        if f.read(12)[:4] != b"RIFF":
            return 0
        while header := f.read(8):
            if len(header) < 8:
                return 0
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                return max(0, size - (path.stat().st_size - f.tell()))
            f.seek(size + size % 2, 1)
    return 0


def _check(path: Path, sample_rate: int, resample: bool) -> None:
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for broken files
        raise AudioError(f"{path}: cannot read audio ({error})") from error
    if info.format == "WAV" and (missing := _wav_shortfall(path)):
        raise AudioError(f"{path}: truncated ({missing} bytes of audio data missing)")
    if info.frames <= 0:
        raise AudioError(f"{path}: the file holds no samples")
    if info.samplerate != sample_rate and not resample:
        raise AudioError(
            f"{path}: sample rate {info.samplerate} Hz, but the model expects {sample_rate} Hz "
            "(to convert it: data.resample=true for train, compare and evaluate; --resample for "
            "synthesize)"
        )


def load_audio(path: str | Path, sample_rate: int, resample: bool = False) -> np.ndarray:
    """Mono float32 samples in ``[-1, 1)`` (int16 / 32768 for 16-bit files), shape ``(T,)``."""
    path = Path(path)
    _check(path, sample_rate, resample)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from error
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    if audio.shape[1] > 1:
        warnings.warn(f"{path}: {audio.shape[1]} channels mixed down to mono", stacklevel=2)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate).astype(np.float32)
    return audio


class AudioClips(Dataset):
    """Whole clips; item ``i`` is ``(T_i,)`` float32, cut to a multiple of ``length_multiple``.

    Args:
        source: LJSpeech directory, folder or file list (see ``list_audio``).
        sample_rate: the rate the model expects.
        split: ``train``, ``test`` (the first ``n_test`` clips by name) or ``all``.
        n_test: size of the test split (1310 for LJSpeech).
        resample: convert other rates with librosa instead of refusing them.
        skip_bad: leave out unreadable, empty or wrongly sampled files, and report them.
        length_multiple: cut each clip to a multiple of this (256 for evaluation).
    """

    def __init__(
        self,
        source: str | Path,
        sample_rate: int = 22050,
        split: Split = "all",
        n_test: int = 1310,
        resample: bool = False,
        skip_bad: bool = False,
        length_multiple: int = 1,
    ) -> None:
        files = list_audio(source)
        if split == "test":
            files = files[:n_test]
        elif split == "train":
            files = files[n_test:]
        self.sample_rate = sample_rate
        self.resample = resample
        self.length_multiple = length_multiple
        self.files, self.skipped = [], []
        for path in files:
            try:
                _check(path, sample_rate, resample)
                self.files.append(path)
            except AudioError as error:
                if not skip_bad:
                    raise
                self.skipped.append(str(error))
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} bad audio files, e.g. {self.skipped[0]}",
                stacklevel=2,
            )
        if not self.files:
            raise AudioError(f"{source}: the {split} split holds no usable audio files")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        audio = load_audio(self.files[index], self.sample_rate, self.resample)
        usable = len(audio) - len(audio) % self.length_multiple
        if usable == 0:
            raise AudioError(
                f"{self.files[index]}: {len(audio)} samples, shorter than one hop "
                f"({self.length_multiple}): too short to score"
            )
        return torch.from_numpy(audio[:usable])


class AudioSegments(Dataset):
    """Random fixed-length training segments, zero-padded when a clip is shorter.

    Items are addressed by ``(index, seed)``: the segment start is drawn from ``seed``, so the
    sampler, not the worker, owns the randomness and a resumed run sees the same segments.
    """

    def __init__(self, clips: AudioClips, segment_length: int = 16000) -> None:
        self.clips = clips
        self.segment_length = segment_length

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: tuple[int, int] | int) -> torch.Tensor:
        index, seed = item if isinstance(item, Sequence) else (item, 0)
        audio = self.clips[index]
        n = self.segment_length
        if len(audio) >= n:
            start = int(np.random.default_rng(seed).integers(0, len(audio) - n + 1))
            return audio[start : start + n]
        return torch.nn.functional.pad(audio, (0, n - len(audio)))
