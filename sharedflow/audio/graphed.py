"""Synthesis replayed from a CUDA graph: the row loop's many small kernels launched as one.

WaveFlow's inverse runs ``h`` rows per flow, each a handful of small kernels; on a GPU their
launch cost, not the arithmetic, bounds the speed. ``GraphedDecode(vocoder, batch, frames)``
captures ``vocoder.decode`` once for that input shape on the vocoder's CUDA device. A call
copies the mel ``(batch, n_mels, frames)`` and the latent ``(batch, hop frames)`` into the
captured buffers, replays the graph and returns a copy of the audio. On a CPU there is nothing
to capture: the call is ``decode`` itself, so code written against it runs anywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GraphedDecode"]


class GraphedDecode:
    """``vocoder.decode`` for one ``(batch, frames)``, from a CUDA graph where there is one."""

    def __init__(self, vocoder: nn.Module, batch: int, frames: int, warmup: int = 2) -> None:
        weight = next(vocoder.flow.parameters())
        n_samples = vocoder.hop_length * frames
        if n_samples % vocoder.length_multiple:
            raise ValueError(
                f"{frames} frames give {n_samples} samples, not a multiple of the fold "
                f"{vocoder.length_multiple}"
            )
        self.vocoder = vocoder
        self.mel = torch.zeros(batch, vocoder.mel.channels, frames, device=weight.device)
        self.z = torch.zeros(batch, n_samples, dtype=weight.dtype, device=weight.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if weight.device.type != "cuda":
            return
        side = torch.cuda.Stream(weight.device)
        side.wait_stream(torch.cuda.current_stream(weight.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup):  # library handles and allocator pools, outside the capture
                vocoder.decode(self.mel, self.z)
        torch.cuda.current_stream(weight.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.audio = vocoder.decode(self.mel, self.z)

    @torch.inference_mode()
    def __call__(self, mel: Tensor, z: Tensor) -> Tensor:
        """Audio ``(batch, hop frames)`` from ``mel`` and ``z`` of the captured shapes."""
        if tuple(mel.shape) != tuple(self.mel.shape) or tuple(z.shape) != tuple(self.z.shape):
            raise ValueError(
                f"captured for mel {tuple(self.mel.shape)} and z {tuple(self.z.shape)}, given "
                f"{tuple(mel.shape)} and {tuple(z.shape)}"
            )
        if self.graph is None:
            return self.vocoder.decode(mel.float(), z.to(self.z.dtype))
        self.mel.copy_(mel)
        self.z.copy_(z)
        self.graph.replay()
        return self.audio.clone()
