"""Model builders: each assembles engine layers, estimators and a context encoder."""

from sharedflow.models.glow import glow, nanoflow_glow
from sharedflow.models.image import ImageFlow
from sharedflow.models.tarflow import TarFlow, tarflow
from sharedflow.models.vocoder import Vocoder
from sharedflow.models.waveflow import waveflow, waveflow_parakeet
from sharedflow.models.waveglow import waveglow

__all__ = [
    "ImageFlow",
    "TarFlow",
    "Vocoder",
    "glow",
    "nanoflow_glow",
    "tarflow",
    "waveflow",
    "waveflow_parakeet",
    "waveglow",
]
