"""Evaluation metrics: accuracy, macro-F1 and perplexity, from sums that add up across ranks.

Metrics are computed from a confusion matrix and token-level loss sums (not per-batch means),
so sharded evaluation under DDP reduces with one all-reduce and gives the same numbers as a
single process.
"""

from __future__ import annotations

import math

import torch

#: exp() of a large loss overflows; a perplexity this high means "untrained" anyway.
MAX_LOG_PERPLEXITY = 50.0


def accuracy(confusion: torch.Tensor) -> float:
    """Fraction of correct predictions; ``confusion[true, predicted]`` holds counts."""
    total = confusion.sum().item()
    return confusion.diag().sum().item() / total if total else 0.0


def macro_f1(confusion: torch.Tensor) -> float:
    """Unweighted mean of per-class F1 over the classes present in truth or prediction.

    Classes that never occur and are never predicted are skipped (as scikit-learn does with
    ``labels`` left unset), so a small validation split does not drag the mean down.
    """
    confusion = confusion.double()
    true_pos = confusion.diag()
    support = confusion.sum(dim=1)
    predicted = confusion.sum(dim=0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * true_pos / denom.clamp(min=1), torch.zeros_like(true_pos))
    return f1[present].mean().item()


def perplexity(mean_token_loss: float) -> float:
    """exp(mean cross-entropy per token), capped to stay finite."""
    return math.exp(min(mean_token_loss, MAX_LOG_PERPLEXITY))


def confusion_matrix(
    labels: torch.Tensor, predictions: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts of (true, predicted) pairs as a ``num_classes x num_classes`` int64 matrix."""
    index = labels.long() * num_classes + predictions.long()
    counts = torch.bincount(index.flatten().cpu(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


#: Dense bf16 tensor-core peak FLOP/s by GPU name fragment (vendor datasheets, no sparsity).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}


def peak_flops(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a GPU from its name (``torch.cuda.get_device_name``), if known."""
    for fragment, flops in PEAK_BF16_FLOPS.items():  # longest-specific entries come first
        if fragment in device_name:
            return flops
    return None


def device_peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of the GPU a run trains on; None on CPUs and GPUs not in the table."""
    return peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def train_flops_per_token(
    num_params: int, *, layers: int = 0, hidden: int = 0, seq_len: int = 0
) -> float:
    """Training FLOPs per token of a decoder: 6N + 12 * layers * hidden * seq_len.

    6N counts every parameter's matmul forward (2N) and backward (4N); the second term is
    attention's score and value products, which no parameter accounts for (PaLM appendix B,
    the formula nanoGPT's ``estimate_mfu`` uses). Leave the dims at 0 for the 6N-only figure.
    """
    return 6.0 * num_params + 12.0 * layers * hidden * seq_len


def mfu(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    """Model FLOPs utilisation: the FLOP/s the model's arithmetic needs over the GPU's peak.

    Recomputation (activation checkpointing) is not counted: MFU, not hardware utilisation.
    """
    return flops_per_token * tokens_per_second / peak
