"""Which examples each rank trains on, step after step, and how many steps that makes.

The data order is a seeded permutation per epoch, sharded over DDP ranks the way
``DistributedSampler`` shards it; the loop's position in it is part of every checkpoint, so a
resumed run sees exactly the batches the interrupted one would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from snowtrain.api.spec import TrainingSpec

from .checkpoint import TrainState
from .distributed import World


class EpochOrder:
    """A seeded permutation per epoch, padded and strided over ranks like DistributedSampler.

    Given item ``lengths``, the permutation is length-grouped the way transformers'
    ``LengthGroupedSampler`` does it (random megabatches of 50 batches, each sorted by
    length), with one global batch (``batch_size`` x ranks) as the unit, so the ranks' batches
    of one step come from the same sorted run and all pad to about the same width.

    With ``shard_size`` the data is this rank's own share (a sharded ingest, ``data/shard.py``):
    the permutation is of the local examples (length-grouped per rank), repeated up to
    ``shard_size`` (the largest rank's share) so every rank takes the same number of steps.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        world: World,
        lengths: Sequence[int] | None = None,
        shard_size: int | None = None,
    ) -> None:
        self.size, self.batch_size, self.seed, self.world = size, batch_size, seed, world
        self.lengths = lengths
        self.local = shard_size is not None
        self.shard_size = shard_size if shard_size is not None else math.ceil(size / world.size)
        self.batches_per_epoch = max(1, math.ceil(self.shard_size / batch_size))
        self._cached: tuple[int, list[int]] | None = None

    def shard(self, epoch: int) -> list[int]:
        """This rank's example indices for ``epoch`` (the same on every call and every run)."""
        if self._cached and self._cached[0] == epoch:
            return self._cached[1]
        generator = torch.Generator().manual_seed(self.seed + epoch)
        # One global batch groups by length: this rank's alone when it holds only its share.
        group = self.batch_size * (1 if self.local else self.world.size)
        if self.lengths is None:
            perm = torch.randperm(self.size, generator=generator).tolist()
        else:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            perm = get_length_grouped_indices(self.lengths, group, generator=generator)
        if self.local:  # its own examples, cycled up to the largest rank's share
            laps = -(-self.shard_size // max(len(perm), 1))
            shard = (perm * laps)[: self.shard_size]
        else:
            perm += perm[: self.shard_size * self.world.size - self.size]  # equal shards
            shard = perm[self.world.rank :: self.world.size]
        self._cached = (epoch, shard)
        return shard

    def batches(self, state: TrainState) -> Iterator[list[int]]:
        """Endless index batches from ``state.epoch/position``, advancing the state as it goes."""
        while True:
            if state.position >= self.batches_per_epoch:
                state.epoch, state.position = state.epoch + 1, 0
            start = state.position * self.batch_size
            indices = self.shard(state.epoch)[start : start + self.batch_size]
            state.position += 1
            yield indices


def plan_steps(spec: TrainingSpec, order: EpochOrder) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    per_epoch = max(1, math.ceil(order.batches_per_epoch / spec.gradient_accumulation_steps))
    total = spec.max_steps or max(1, math.ceil(spec.epochs * per_epoch))
    return per_epoch, total
