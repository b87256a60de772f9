"""Cross-entropy over a large vocabulary without full-size fp32 copies of the logits.

Transformers' causal-LM loss upcasts the whole ``[tokens, vocab]`` logits to fp32 and
``cross_entropy`` then keeps its fp32 log-softmax for the backward pass: two fp32 tensors of
tokens x vocab on top of the bf16 logits. For GPT-2 small at 16 x 1024 tokens and a 50k
vocabulary that is 2 x 3.3 GB, about half the activation memory of a training step; the
backward pass adds a third (the fp32 gradient) before casting it down.

``ChunkedCrossEntropy`` computes the same loss and gradient a slice of rows at a time: the
forward keeps the logits as they came (bf16 under autocast) and one fp32 log-sum-exp per row;
the backward rebuilds softmax - one-hot slice by slice, in fp32, straight into a gradient of
the logits' dtype. No tensor of tokens x vocab in fp32 ever exists in full, and the values
are those of ``F.cross_entropy(logits.float(), ...)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: fp32 elements per slice (256 MiB): large enough to keep the GPU busy, small next to a
#: full copy of the logits.
SLICE_ELEMENTS = 1 << 26


def _slices(rows: int, vocab: int) -> list[tuple[int, int]]:
    step = max(1, SLICE_ELEMENTS // max(vocab, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


class ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``logits [rows, vocab]`` against ``targets [rows]``; rows whose
    target is ``ignore_index`` count for nothing. Gradients flow to ``logits`` only."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int
    ) -> torch.Tensor:
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start, end in _slices(*logits.shape):
            lse[start:end] = torch.logsumexp(logits[start:end].float(), dim=-1)
        target_logits = logits.gather(1, safe_targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, safe_targets, valid, lse)
        return ((lse - target_logits) * valid).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        logits, targets, valid, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        scale = valid.to(torch.float32) * grad_output.to(torch.float32)
        for start, end in _slices(*logits.shape):
            probs = logits[start:end].to(torch.float32, copy=True)  # never the saved logits
            probs.sub_(lse[start:end, None]).exp_()  # softmax
            rows = torch.arange(end - start, device=logits.device)
            probs[rows, targets[start:end]] -= 1.0
            grad[start:end] = probs.mul_(scale[start:end, None])
        return grad, None, None


def cross_entropy_sum(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Summed cross-entropy in fp32 (for evaluation too: no full fp32 copy of the logits)."""
    flat = logits.reshape(-1, logits.shape[-1])
    return ChunkedCrossEntropy.apply(flat, targets.reshape(-1), ignore_index)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Drop-in for transformers' ``ForCausalLMLoss`` (same arguments, same value): the mean
    over predicted tokens, or the sum over ``num_items_in_batch`` when given."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1).to(logits.device)
    total = cross_entropy_sum(logits.reshape(-1, vocab_size), targets, ignore_index)
    if num_items_in_batch is None:
        return total / (targets != ignore_index).sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
