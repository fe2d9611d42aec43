"""``Vocoder``: a flow over waveforms conditioned on their mel spectrogram.

The flow maps audio ``(B, T)`` to a latent of the same shape; its context encoder upsamples the
mel. The vocoder adds the mel front end, so that training and evaluation read raw audio, and
synthesis from a mel of ``F`` frames writes ``hop * F`` samples.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedflow.audio.mel import MelSpectrogram
from sharedflow.core.flow import NormalizingFlow
from sharedflow.core.metrics import METRICS
from sharedflow.core.task import median_seconds
from sharedflow.layers.reshape import Fold2d
from sharedflow.nets.wavenet2d import WaveNet2D

__all__ = ["Vocoder"]


class Vocoder(nn.Module):
    """Mel front end + conditional flow over ``(B, T)`` waveforms; a ``core.task.Task``.

    Args:
        flow: a ``NormalizingFlow`` over ``(B, T)`` with a mel context encoder.
        mel: the mel front end used for training, evaluation and resynthesis.
        length_multiple: ``T`` must be a multiple of it (the fold: ``h`` or ``n_group``).
        temperature: the default synthesis temperature (WaveGlow's sigma 0.6; WaveFlow 1.0).
    """

    modality = "audio"
    metric = METRICS["ll"]
    quality_metrics = tuple(
        METRICS[name] for name in ("pesq", "stoi", "mcd_db", "mrstft", "log_mel_l1", "periodicity")
    )

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
        (``t`` defaults to the model's own), in the flow's dtype (its context encoder casts the
        mel, so that an f0 row keeps float32's precision).

        ``length`` defaults to ``hop * F``; a wav's mel has ``1 + T // hop`` frames, so its
        resynthesis passes ``length=T``. The flow runs on the next multiple of its fold, and
        the tail it needed for that is cut off; when the fold is longer than the hop (512 rows
        at hop 64) that tail can lie past the last frame, which is then repeated to cover it.
        ``noise``: the ``N(0, 1)`` draws to use, ``(B, n)`` with ``n`` that multiple
        (``z = t noise``), as an exported graph takes them.
        """
        dtype = next(self.flow.parameters()).dtype
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
        frames = -(-n_samples // self.hop_length)
        if frames > mel.shape[-1]:
            mel = F.pad(mel, (0, frames - mel.shape[-1]), mode="replicate")
        return self.decode(mel, z)[:, :length]

    def decode(self, mel: Tensor, z: Tensor) -> Tensor:
        """The inverse flow: latent ``z (B, T)`` and its mel ``(B, n_mels, T / hop)`` to audio
        ``(B, T)``. Synthesis, and the graph ``sharedflow export`` writes; rows that only the
        likelihood reads, such as the phases of a pitched mel, are zeroed."""
        context = self.flow.encode(self.mel.for_synthesis(mel), z.shape)
        audio, _ = self.flow.transform.inverse(z, context)
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

    @torch.no_grad()
    def quality(
        self,
        clips: Any,
        temperature: float | None = None,
        max_items: int | None = None,
        seed: int = 0,
    ) -> dict[str, float]:
        """Mean resynthesis scores over held-out clips ``(T,)`` (``audio.quality``: PESQ, STOI,
        MCD, MR-STFT, log-mel L1, periodicity and pitch error). Clip ``i`` uses noise seed
        ``seed + i``, so two runs print the same figures; a clip that cannot be scored is an
        error naming it."""
        from sharedflow.audio.quality import QualityError, resynthesis_scores

        scores: dict[str, list[float]] = {}
        for i in range(_count(clips, max_items)):
            clip = clips[i].float()
            audio = self.resynthesize(clip[None], temperature, seed + i)[0].float().cpu()
            try:
                result = resynthesis_scores(clip, audio, self.sample_rate)
            except QualityError as error:
                raise QualityError(f"{_item_name(clips, i)}: {error}") from error
            for name, value in result.items():
                scores.setdefault(name, []).append(value)
        # f0_cents is nan for a clip with no frame voiced in both: averaged over those that have
        return {name: _finite_mean(values) for name, values in scores.items()}

    def quality_floor(self, clips: Any, max_items: int | None = None) -> dict[str, float]:
        """The resynthesis scores of white noise with each clip's RMS (seeded): the level a
        vocoder that learned only the loudness would reach."""
        from sharedflow.audio.quality import resynthesis_scores

        generator = torch.Generator().manual_seed(0)
        scores: dict[str, list[float]] = {}
        for i in range(_count(clips, max_items)):
            clip = clips[i].double()
            noise = torch.randn(clip.shape, generator=generator, dtype=clip.dtype) * clip.std()
            for name, value in resynthesis_scores(clip, noise, self.sample_rate).items():
                scores.setdefault(name, []).append(value)
        return {name: statistics.fmean(values) for name, values in scores.items()}

    @torch.no_grad()
    def write_samples(
        self, out_dir: Path, stem: str, clips: Any, temperature: float | None = None
    ) -> list[Path]:
        """The first held-out clip (up to 4 s) resynthesised: ``<stem>.wav``, and ``<stem>.png``,
        its spectrogram against the original, which is written as ``original.wav``.
        Samples beyond full scale are reported (``audio.io.write_wav``)."""
        from sharedflow.audio.io import write_wav
        from sharedflow.audio.spectrogram import plot_spectrograms

        clip = clips[0][: 4 * self.sample_rate].float()
        audio = self.resynthesize(clip[None], temperature)[0].float().cpu()
        return [
            write_wav(out_dir / f"{stem}.wav", audio, self.sample_rate),
            write_wav(out_dir / "original.wav", clip, self.sample_rate),
            plot_spectrograms(clip, audio, self.sample_rate, stem, out_dir / f"{stem}.png"),
        ]

    def generation_gemm(self, size: int) -> tuple[int, int, int] | None:
        """``(m, k, n)``, the matrix product that synthesis of ``size`` samples repeats most: a
        WaveFlow row conv (``WaveNet2D.row_gemm`` over ``T / h`` columns, or one); None for a
        flow without a row loop. ``sharedflow.precision`` times bf16 against fp32 on it."""
        nets = [m for m in self.flow.modules() if isinstance(m, WaveNet2D)]
        folds = [m for m in self.flow.modules() if isinstance(m, Fold2d)]
        if not nets or not folds:
            return None
        height = folds[0].height
        return nets[0].row_gemm(1 if height is None else max(1, size // height))

    @torch.no_grad()
    def speed(self, clips: Any) -> tuple[float, str]:
        """Synthesis speed in kHz (samples per millisecond) for 1 s of the first held-out clip;
        the median of three timed runs after a warm-up."""
        mel = self.mel(clips[0][: self.sample_rate][None].to(self.mel.basis.device))
        seconds = median_seconds(lambda: self.synthesize(mel))
        return self.hop_length * mel.shape[-1] / 1000 / seconds, "kHz"


def _count(items: Any, max_items: int | None) -> int:
    return len(items) if max_items is None else min(max_items, len(items))


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")


def _item_name(items: Any, index: int) -> str:
    files = getattr(items, "files", None)
    return str(files[index]) if files is not None else f"held-out item {index}"
