"""Model builders: each assembles engine layers, estimators and a context encoder."""

from sharedflow.models.vocoder import Vocoder
from sharedflow.models.waveflow import waveflow, waveflow_parakeet
from sharedflow.models.waveglow import waveglow

__all__ = ["Vocoder", "waveflow", "waveflow_parakeet", "waveglow"]
