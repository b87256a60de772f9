"""Process-group setup for torchrun (DDP), and the single-process fallback.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with WORLD_SIZE > 1 every rank trains on its own
shard and rank 0 alone reports, checkpoints and exports. A plain ``python -m`` run is the
same code with a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world() -> World:
    """Join the process group torchrun prepared (NCCL on GPUs, gloo on CPU), or run alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=rank, local_rank=local_rank, size=size, device=device)


def shutdown(world: World) -> None:
    """Leave the process group (torchrun warns about leaked groups otherwise)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op alone)."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(world: World, flag: bool) -> bool:
    """True when the flag is set on any rank: every rank must stop at the same step."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=world.device)
    return all_reduce_sum(world, tensor).item() > 0
