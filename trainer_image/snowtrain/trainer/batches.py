"""Micro-batches as the loop and the evaluation see them: named CPU tensors, then the device.

``collate`` (the dataset's) stacks items into a ``Batch``; ``to_device`` moves it without
stalling the host, and ``real_tokens`` counts what throughput is measured in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Batch = dict[str, torch.Tensor]
Collate = Callable[[list[dict[str, torch.Tensor]]], Batch]


def real_tokens(batch: Batch) -> int:
    """Tokens that are not padding; a batch without a mask has none (see ``collate``)."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Copy a CPU batch to ``device`` without making the host wait for the GPU.

    A copy from pageable memory may synchronise with the stream, so the host would sit idle
    until the previous step's kernels finish instead of queueing the next ones. From pinned
    (page-locked) memory the copy is truly asynchronous; PyTorch's caching host allocator
    keeps each pinned buffer alive until its copy has run.
    """
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
