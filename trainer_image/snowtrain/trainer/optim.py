"""The optimizer and learning-rate schedule a ``TrainingSpec`` asks for."""

from __future__ import annotations

import math

import torch
from torch import nn

from snowtrain.api.spec import TrainingSpec


def build_optimizer(
    model: nn.Module, spec: TrainingSpec, device: torch.device, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm weights (1-D tensors) do not.

    The fused kernel (one launch for all parameters) exists for CUDA and, since torch 2.4,
    for CPU; it is what makes the optimizer step cheap next to the model's step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=spec.learning_rate, betas=betas, eps=1e-8, fused=device.type in ("cuda", "cpu")
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: TrainingSpec, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over ``warmupRatio`` of the steps, then cosine / linear decay or flat."""
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
    return get_scheduler(
        name[spec.lr_scheduler],
        optimizer,
        num_warmup_steps=math.ceil(spec.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
