"""Training on several processes: each holds a copy of the model, reads its slice of the batch,
and the gradients are averaged (DDP). Started by `torchrun`; gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands: its rank among `world_size`, and its local GPU (if any)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the checkpoints, the logs and the plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device_type: str) -> ProcessGroup:
    """Join the process group `torchrun` set up (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    group = ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(group.local_rank)
    return group


def stop(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def mean_over_processes(value: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """The average of a scalar tensor over all processes (the global mean when slices are equal)."""
    if not group.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / group.world_size


def sum_over_processes(value: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """The sum of a tensor over all processes."""
    if not group.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_rows(value: torch.Tensor, group: ProcessGroup, dim: int) -> torch.Tensor:
    """Every process's slice of `value` joined along `dim`, in rank order (each process holds equal slices)."""
    if not group.distributed:
        return value
    # Floats travel as float32: not every backend moves bf16, and bf16 -> float32 -> bf16 is exact.
    sent = value.detach().float() if value.is_floating_point() else value.detach()
    parts = [torch.empty_like(sent) for _ in range(group.world_size)]
    dist.all_gather(parts, sent.contiguous())
    return torch.cat(parts, dim=dim).to(value.dtype)
