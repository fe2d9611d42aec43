"""Audio: the mel front end, data, vocoder helpers."""

from sharedflow.audio.mel import MelSpectrogram

__all__ = ["MelSpectrogram"]
