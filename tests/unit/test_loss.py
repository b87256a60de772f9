"""The causal-LM loss: transformers' value and gradients, without full fp32 logits copies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.loss.loss_utils import ForCausalLMLoss

from snowtrain.trainer import loss as loss_module
from snowtrain.trainer.loss import causal_lm_loss, cross_entropy_sum


@pytest.fixture
def small_slices(monkeypatch):
    """A few hundred elements per slice, so every test crosses many slice boundaries."""
    monkeypatch.setattr(loss_module, "SLICE_ELEMENTS", 500)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sum_and_gradient_equal_cross_entropy_on_fp32_logits(small_slices, dtype):
    torch.manual_seed(0)
    logits = (torch.randn(37, 101) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 101, (37,))
    targets[::5] = -100  # ignored rows count for nothing
    ours = cross_entropy_sum(logits, targets)
    ours.backward(torch.tensor(0.7))
    grad = logits.grad
    logits.grad = None
    reference = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
    (reference * 0.7).backward()
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    assert grad.dtype == dtype  # the gradient of the logits as they came
    assert torch.allclose(grad.float(), logits.grad.float(), atol=1e-6)
    assert grad[::5].abs().sum() == 0


def test_causal_lm_loss_is_transformers_loss(small_slices):
    torch.manual_seed(1)
    logits = torch.randn(3, 9, 50, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9))
    labels[0, :4] = -100  # a prompt: no loss on it
    ours = causal_lm_loss(logits, labels, vocab_size=50)
    theirs = ForCausalLMLoss(logits, labels, vocab_size=50)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    assert torch.allclose(g_ours, g_theirs, atol=1e-7)
    summed = causal_lm_loss(logits, labels, vocab_size=50, num_items_in_batch=torch.tensor(11))
    theirs = ForCausalLMLoss(logits, labels, vocab_size=50, num_items_in_batch=torch.tensor(11))
    assert summed.item() == pytest.approx(theirs.item(), rel=1e-6)


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while ``fn`` runs."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_training_keeps_no_fp32_copy_of_the_logits():
    """bf16 autocast, a GPT-2-sized head (768 x 8192 vocab) over 2 x 256 tokens: the stock
    loss keeps fp32 log-probabilities (tokens x vocab x 4 bytes) for backward; ours keeps
    the bf16 logits and one number per token."""
    torch.manual_seed(0)
    head = torch.nn.Linear(768, 8192, bias=False)
    hidden = torch.randn(2, 256, 768)
    labels = torch.randint(0, 8192, (2, 256))
    logits_fp32_bytes = 2 * 256 * 8192 * 4

    def step(loss_fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = head(hidden)
            loss_fn(logits, labels, vocab_size=8192)

        return saved_bytes(run)

    stock, ours = step(ForCausalLMLoss), step(causal_lm_loss)
    assert stock >= logits_fp32_bytes
    assert ours < logits_fp32_bytes * 0.6  # bf16 logits (half) + the head's own inputs
    print(f"saved for backward: stock {stock / 2**20:.1f} MiB, ours {ours / 2**20:.1f} MiB")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_models_the_trainer_builds_use_it_with_the_same_loss(family):
    from snowtrain.api.spec import ArchitectureSpec
    from snowtrain.trainer.models import new_causal_lm

    torch.manual_seed(0)
    model = new_causal_lm(ArchitectureSpec(family=family, size="tiny"), 300, 32)
    assert model.loss_function is causal_lm_loss
    ids = torch.randint(0, 300, (2, 32))
    out = model(input_ids=ids, labels=ids)
    expected = ForCausalLMLoss(out.logits, ids, vocab_size=300)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
