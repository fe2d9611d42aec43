"""``torchrun`` support: the process group, the device, and which rank talks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Distributed", "pick_device"]


@dataclass
class Distributed:
    """Rank and world size from torchrun's environment (one process when absent)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every rank (so that all ranks skip a step together)."""
        flag = torch.isfinite(value.detach()).all().float().reshape(1)
        if self.enabled:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(name: str, distributed: Distributed) -> torch.device:
    """``auto``: this rank's CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA device")
        torch.cuda.set_device(distributed.local_rank)
        return torch.device("cuda", distributed.local_rank)
    return torch.device(name)
