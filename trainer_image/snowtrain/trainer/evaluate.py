"""Evaluation over the validation split, summed over every rank.

The loss is summed per example (classification) or per target token (LMs), so a mean over
ranks of different shard sizes is still the mean over the data; classifiers also sum a
confusion matrix for accuracy and macro F1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .batches import Collate, to_device
from .distributed import GroupExchange, World, all_reduce_sum
from .loss import cross_entropy_sum
from .metrics import accuracy, confusion_matrix, macro_f1, perplexity
from .precision import Precision


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset[Any],
    collate: Collate,
    *,
    task: str,
    batch_size: int,
    precision: Precision,
    world: World,
    num_labels: int | None = None,
    should_abort: Callable[[], bool] = lambda: False,
    sharded: bool = False,
) -> dict[str, float] | None:
    """Loss summed per example (classification) or per target token (LMs), over all ranks.

    Returns None when ``should_abort`` (asked before each batch every rank reaches, so it
    may be a collective) says to stop: a SIGTERM must not wait for a long evaluation to
    finish, or the pod's grace period runs out before the checkpoint is written.
    ``sharded``: ``data`` is this rank's own share of the validation rows (a sharded ingest),
    evaluated whole; otherwise every rank holds all of them and takes every ``size``-th.
    """
    was_training = model.training
    model.eval()
    device = world.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros((num_labels or 1, num_labels or 1), dtype=torch.int64)
    # A share is evaluated whole; otherwise every size-th row (eval shards: no padding).
    first, step = (0, 1) if sharded else (world.rank, world.size)
    indices = list(range(first, len(data), step))
    lengths = getattr(data, "lengths", None)
    if lengths is not None:  # the metrics are sums over rows, so any order; sorted pads least
        by_length = np.argsort(-np.asarray(lengths)[indices], kind="stable")
        indices = [indices[i] for i in by_length]
    if sharded:  # the abort check is a collective: only as often as the smallest share
        smallest = min(GroupExchange(world).all_gather(len(indices)))
        batches_on_every_rank = math.ceil(smallest / batch_size)
    else:
        batches_on_every_rank = math.ceil(len(data) // world.size / batch_size)
    for start in range(0, len(indices), batch_size):
        if start // batch_size < batches_on_every_rank and should_abort():
            model.train(was_training)
            return None
        batch = to_device(collate([data[i] for i in indices[start : start + batch_size]]), device)
        labels = batch.pop("labels")
        with precision.autocast(device):
            logits = model(**batch).logits
        if task == "classification":
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            count += labels.numel()
            confusion += confusion_matrix(labels, logits.argmax(-1), num_labels or 1)
        else:  # token t predicts token t + 1; the last position predicts nothing
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)
            loss_sum += cross_entropy_sum(logits, targets)  # no fp32 copy of all the logits
            count += (targets != -100).sum()
    all_reduce_sum(world, loss_sum)
    all_reduce_sum(world, count)
    model.train(was_training)
    mean_loss = (loss_sum / count.clamp(min=1)).item()
    if task == "classification":
        confusion = all_reduce_sum(world, confusion.to(device)).cpu()
        return {
            "evalLoss": mean_loss,
            "evalAccuracy": accuracy(confusion),
            "evalMacroF1": macro_f1(confusion),
        }
    return {"evalLoss": mean_loss, "perplexity": perplexity(mean_loss)}
