"""What a pretraining step costs, as far as a CPU can tell: graphs, attention kernels, memory.

A packed batch must reach the model without an attention mask, so that SDPA is called with
``is_causal=True`` and no mask (the FlashAttention kernel cannot take an explicit mask).
Nothing in the model's forward and loss may break the ``torch.compile`` graph: each break
splits fusion and adds a trip through Python. The MLP must not keep more activations for
backward than it needs, and eager steps must not stop to check for padding.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from snowtrain.api.spec import ArchitectureSpec
from snowtrain.trainer.data.tokenize import build_packed
from snowtrain.trainer.models import build_causal_lm

CORPUS = [f"document {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(40)]


class Corpus:
    def iter_batches(self, split: str = "train"):
        yield from pa.table({"text": CORPUS}).to_batches(max_chunksize=16)


def sdpa_calls(explanation) -> list[dict]:
    """Keyword arguments of every scaled_dot_product_attention call in the traced graphs."""
    sdpa = {
        torch.nn.functional.scaled_dot_product_attention,
        torch._C._nn.scaled_dot_product_attention,
    }
    return [
        dict(node.kwargs)
        for graph in explanation.graphs
        for node in graph.graph.nodes
        if node.op == "call_function" and node.target in sdpa
    ]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_packed_pretraining_forward_compiles_to_one_graph_with_causal_sdpa(
    family, bpe_tokenizer, tmp_path
):
    data = build_packed(Corpus(), "train", bpe_tokenizer, 32, tmp_path)
    batch = data.collate([data[i] for i in range(4)])
    model = build_causal_lm(ArchitectureSpec(family=family, size="tiny"), bpe_tokenizer, 32)

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**batch)

    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    calls = sdpa_calls(explanation)
    assert len(calls) == 2  # one per layer of the tiny preset
    for call in calls:
        assert call.get("attn_mask") is None and call.get("is_causal") is True, call


def test_pretraining_models_have_no_dropout_unless_asked(bpe_tokenizer):
    """Dropout costs throughput and is not how corpora trained for ~1 epoch are regularised."""
    gpt2 = build_causal_lm(ArchitectureSpec(family="gpt2", size="tiny"), bpe_tokenizer, 32)
    assert (gpt2.config.resid_pdrop, gpt2.config.embd_pdrop, gpt2.config.attn_pdrop) == (0, 0, 0)
    llama = build_causal_lm(
        ArchitectureSpec(family="llama", size="tiny", dropout=0.1), bpe_tokenizer, 32
    )
    assert llama.config.attention_dropout == 0.1


def saved_for_backward_bytes(model, batch) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps between forward and backward (activation memory), and the loss."""
    total = 0

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(**batch).loss
    return total, loss


def test_gpt2_mlp_activation_is_the_fused_kernel_and_saves_activation_memory(bpe_tokenizer):
    """Same GELU (tanh approximation) as GPT-2's "gelu_new", but one kernel: less kept."""
    from transformers.activations import NewGELUActivation

    torch.manual_seed(0)
    model = build_causal_lm(ArchitectureSpec(family="gpt2", size="tiny"), bpe_tokenizer, 128)
    ids = torch.randint(0, len(bpe_tokenizer), (4, 128))
    batch = {"input_ids": ids, "labels": ids}
    fused_bytes, fused_loss = saved_for_backward_bytes(model, batch)
    for block in model.transformer.h:
        block.mlp.act = NewGELUActivation()
    reference_bytes, reference_loss = saved_for_backward_bytes(model, batch)

    assert fused_loss.item() == pytest.approx(reference_loss.item(), abs=1e-5)
    assert fused_bytes < 0.85 * reference_bytes, (fused_bytes, reference_bytes)


def test_unmasked_blocks_get_no_padding_check_and_no_false_alarm(monkeypatch):
    """Packed blocks hold EOS, which is also the pad id. Without a mask, transformers' GPT-2
    checks each row's ends for the pad id (a device sync per forward) and warns that the input
    may be padded; snowtrain's batches are unmasked only when nothing is padded."""
    from transformers import GPT2LMHeadModel, modeling_utils
    from transformers.utils import logging as hf_logging

    from snowtrain.api.spec import TokenizerSpec
    from snowtrain.trainer.models import train_tokenizer

    tokenizer = train_tokenizer(iter(CORPUS), TokenizerSpec(vocab_size=300), 32)
    model = build_causal_lm(ArchitectureSpec(family="gpt2", size="tiny"), tokenizer, 32)
    assert model.config.pad_token_id == tokenizer.eos_token_id
    ids = torch.randint(0, len(tokenizer), (2, 32))
    ids[:, 0] = tokenizer.eos_token_id
    logged: list[str] = []
    monkeypatch.setattr(modeling_utils.logger, "warning", lambda msg, *a, **k: logged.append(msg))

    def warnings_of(forward_model) -> str:
        hf_logging.warning_once.cache_clear()
        logged.clear()
        forward_model(input_ids=ids, labels=ids)
        return "\n".join(logged)

    assert "attention_mask" not in warnings_of(model)
    assert "attention_mask" in warnings_of(GPT2LMHeadModel(model.config))  # what it replaces
