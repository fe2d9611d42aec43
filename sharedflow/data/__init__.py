"""Datasets and built-in data."""

from sharedflow.data.audio import AudioClips, AudioError, AudioSegments, list_audio, load_audio
from sharedflow.data.builtin import GlottalPulses, Harmonics, speech_corpus
from sharedflow.data.splits import DataSplits, images, speech

__all__ = [
    "AudioClips",
    "AudioError",
    "AudioSegments",
    "DataSplits",
    "GlottalPulses",
    "Harmonics",
    "images",
    "list_audio",
    "load_audio",
    "speech",
    "speech_corpus",
]
