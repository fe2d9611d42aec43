"""``Vocoder``: a flow over waveforms conditioned on their mel spectrogram.

The flow maps audio ``(B, T)`` to a latent of the same shape; its context encoder upsamples the
mel. The vocoder adds the mel front end, so that training and evaluation read raw audio, and
synthesis from a mel of ``F`` frames writes ``hop * F`` samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedflow.audio.mel import MelSpectrogram
from sharedflow.core.flow import NormalizingFlow

__all__ = ["Vocoder"]


class Vocoder(nn.Module):
    """Mel front end + conditional flow over ``(B, T)`` waveforms.

    Args:
        flow: a ``NormalizingFlow`` over ``(B, T)`` with a mel context encoder.
        mel: the mel front end used for training, evaluation and resynthesis.
        length_multiple: ``T`` must be a multiple of it (the fold: ``h`` or ``n_group``).
        temperature: the default synthesis temperature (WaveGlow's sigma 0.6; WaveFlow 1.0).
    """

    modality = "audio"

    def __init__(
        self,
        flow: NormalizingFlow,
        mel: MelSpectrogram,
        length_multiple: int,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.flow = flow
        self.mel = mel
        self.length_multiple = length_multiple
        self.temperature = temperature

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel.hop_length

    def log_prob(self, audio: Tensor, mel: Tensor | None = None) -> Tensor:
        """``log p(audio | mel)`` in nats, ``(B, T) -> (B,)``; the mel defaults to the audio's."""
        if audio.shape[-1] % self.length_multiple:
            raise ValueError(
                f"audio length {audio.shape[-1]} is not a multiple of {self.length_multiple}"
            )
        mel = self.mel(audio) if mel is None else mel
        return self.flow.log_prob(audio, mel)

    def nll(self, audio: Tensor, mel: Tensor | None = None) -> Tensor:
        """Negative log-likelihood in nats per sample, with the Gaussian constant, ``(B,)``.

        This is WaveFlow's and NanoFlow's loss, and minus the "test LL" of the NanoFlow README.
        """
        return -self.log_prob(audio, mel) / audio.shape[-1]

    def forward(self, audio: Tensor) -> Tensor:
        """The training objective on audio segments ``(B, T)``: mean NLL in nats per sample."""
        return self.nll(audio).mean()

    eval_batch_size = 1  # whole clips of different lengths

    def evaluate_batch(self, audio: Tensor) -> dict[str, Tensor]:
        """Held-out metrics per clip: ``ll``, the log-likelihood in nats per sample."""
        return {"ll": -self.nll(audio)}

    @torch.inference_mode()
    def synthesize(
        self,
        mel: Tensor,
        temperature: float | None = None,
        length: int | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Audio from a mel ``(B, n_mels, F)``: ``(B, length)`` samples, ``z ~ N(0, t^2)``
        (``t`` defaults to the model's own), in the flow's dtype (the mel is cast to it).

        ``length`` defaults to ``hop * F``; a wav's mel has ``1 + T // hop`` frames, so its
        resynthesis passes ``length=T``. The flow runs on the next multiple of its fold (which
        divides the hop), and the tail it needed for that is cut off. ``noise``: the ``N(0, 1)``
        draws to use, ``(B, n)`` with ``n`` that multiple (``z = t noise``), as an exported
        graph takes them.
        """
        dtype = next(self.flow.parameters()).dtype
        mel = mel.to(dtype)
        length = self.hop_length * mel.shape[-1] if length is None else length
        if not 0 < length <= self.hop_length * mel.shape[-1]:
            raise ValueError(
                f"cannot synthesise {length} samples from {mel.shape[-1]} mel frames "
                f"(at most {self.hop_length * mel.shape[-1]})"
            )
        n_samples = -(-length // self.length_multiple) * self.length_multiple
        t = self.temperature if temperature is None else temperature
        if noise is None:
            z = self.flow.base.sample((mel.shape[0], n_samples), t)
        elif tuple(noise.shape) != (mel.shape[0], n_samples):
            raise ValueError(
                f"the noise has shape {tuple(noise.shape)}; {length} samples from "
                f"{mel.shape[-1]} frames need ({mel.shape[0]}, {n_samples})"
            )
        else:
            z = t * noise.to(dtype)
        return self.decode(mel, z)[:, :length]

    def decode(self, mel: Tensor, z: Tensor) -> Tensor:
        """The inverse flow: latent ``z (B, T)`` and its mel ``(B, n_mels, T / hop)`` to audio
        ``(B, T)``. Synthesis, and the graph ``sharedflow export`` writes."""
        audio, _ = self.flow.transform.inverse(z, self.flow.encode(mel, z.shape))
        return audio

    @torch.inference_mode()
    def resynthesize(
        self, audio: Tensor, temperature: float | None = None, seed: int | None = 0
    ) -> Tensor:
        """Audio ``(B, T)`` resynthesised from its own mel, same length; the latent noise
        is drawn from ``seed`` (the global RNG when ``None``), so a rerun is identical."""
        mel = self.mel(audio.to(self.mel.basis.device))
        if seed is None:
            return self.synthesize(mel, temperature, audio.shape[-1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.synthesize(mel, temperature, audio.shape[-1])
