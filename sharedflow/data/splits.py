"""What a recipe's ``data`` node builds: a training set and a held-out set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from sharedflow.data.audio import AudioClips, AudioSegments
from sharedflow.data.builtin import speech_corpus

__all__ = ["DataSplits", "speech"]


@dataclass
class DataSplits:
    """``train`` items are addressed by ``(index, seed)``; ``val`` items are whole examples."""

    train: Dataset
    val: Dataset
    modality: str


def speech(
    source: str | None = None,
    sample_rate: int = 22050,
    segment_length: int = 16000,
    n_test: int = 1310,
    resample: bool = False,
    skip_bad: bool = False,
    builtin_clips: int = 48,
    length_multiple: int = 256,
) -> DataSplits:
    """Speech for vocoders: random training segments; whole held-out clips for the test LL.

    Args:
        source: LJSpeech directory, folder or file list; ``None`` writes and uses the built-in
            speech-like corpus of ``builtin_clips`` clips.
        n_test: the first ``n_test`` clips by name are held out (LJSpeech: 1310).
        length_multiple: held-out clips are cut to a multiple of it (the hop, 256).
    """
    root = Path(source).expanduser() if source else speech_corpus(n_clips=builtin_clips)
    common = {"sample_rate": sample_rate, "resample": resample, "skip_bad": skip_bad}
    train = AudioClips(root, split="train", n_test=n_test, **common)
    val = AudioClips(root, split="test", n_test=n_test, length_multiple=length_multiple, **common)
    return DataSplits(AudioSegments(train, segment_length), val, "audio")
