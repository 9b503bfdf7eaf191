"""Where and how a run executes: device choice, seeds, mixed precision and torchrun (DDP) set-up."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA (this process's GPU under torchrun), then Apple MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so two CPU runs with one config give identical metrics."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 autocast on GPUs that have it (no loss scaling needed), fp16 on older ones, else none."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def all_gather(self, value):
        """Every rank's ``value`` as a list, on every rank (plain Python objects)."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size
        torch_dist.all_gather_object(gathered, value)
        return gathered


def init_distributed() -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl on GPU, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch_dist.init_process_group(backend=backend)
    return Distributed(rank, world_size, local_rank)
