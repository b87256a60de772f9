"""Process-group setup for torchrun (DDP), and the single-process fallback.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with WORLD_SIZE > 1 every rank trains on its own
shard and rank 0 alone reports, checkpoints and exports. A plain ``python -m`` run is the
same code with a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    control: Any = None
    """Process group for the loop's stop/checkpoint decisions: gloo over CPU tensors, so
    agreeing on them never waits for the GPU (None: the default group, already gloo on CPU)."""

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
    control = None
    if size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if dist.get_backend() != "gloo":
            control = dist.new_group(backend="gloo")
    return World(rank=rank, local_rank=local_rank, size=size, device=device, control=control)


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


def any_rank(world: World, *flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over the ranks, so every rank takes the same branch at the same step.

    Ranks that branch differently deadlock in the next collective (one saves a checkpoint
    behind a barrier while another enters DDP's all-reduce). One small CPU all-reduce on the
    gloo control group carries all the flags: no GPU sync, whatever the training backend.
    """
    if not world.distributed:
        return tuple(flags)
    tensor = torch.tensor([1 if flag else 0 for flag in flags], dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=world.control)
    return tuple(bool(v) for v in tensor.tolist())


class GroupExchange:
    """The few Python objects ranks must agree on (a query's result batches, row counts,
    row hashes), sent over the gloo control group: CPU only, whatever trains on the GPUs."""

    def __init__(self, world: World) -> None:
        self.world = world

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.world.control)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world.size
        dist.all_gather_object(out, obj, group=self.world.control)
        return out

    def gather_bytes(self, data: bytes) -> list[memoryview] | None:
        """Every rank's ``data`` on rank 0 (None elsewhere), in rank order: as raw tensors,
        not pickled objects, so a rank holds its own bytes once and rank 0 everyone's once."""
        sizes = self.all_gather(len(data))
        padded = torch.zeros(max(sizes), dtype=torch.uint8)
        padded.numpy()[: len(data)] = np.frombuffer(data, dtype=np.uint8)  # one copy, in place
        group, rank0 = self.world.control, self.world.rank == 0
        out = [torch.empty_like(padded) for _ in sizes] if rank0 else None
        dist.gather(padded, gather_list=out, dst=0, group=group)
        if out is None:
            return None
        return [t[:n].numpy().data for t, n in zip(out, sizes, strict=True)]
