"""Attention for continuous batching on a CPU: each sequence attends only to its own keys.

A continuous batching step packs every active sequence into one row of tokens, and the
engine reads each sequence's keys from the paged cache into one packed tensor laid out as
`cu_seq_lens_k` says. Flash attention's varlen kernels (CUDA) compute exactly each
sequence's attention from that layout; without them the engine falls back to one SDPA call
over the whole pack with a mask, so every query is scored against every sequence's keys,
most of them masked: with 32 sequences, 32 times the work the attention needs, and the
largest cost of a decoding step on a CPU.

This function is that varlen computation with the standard SDPA kernel: the packed tensors
are sliced per sequence (views, no copies) and each slice attends with SDPA, causally
aligned to the end of its keys (a sequence's new tokens come after its cached ones). It is
registered with transformers' `AttentionInterface` and switched on for CPU serving only (on
an accelerator, one small kernel launch per sequence and layer would cost more than it
saves), for models whose layers all use full attention (a sliding window needs the mask).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "snowtrain_varlen_sdpa"


def varlen_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Per-sequence SDPA over a continuous batching pack; plain SDPA for anything else.

    `query` is `[1, heads, q_tokens, dim]`, `key`/`value` `[1, kv_heads, k_tokens, dim]`;
    sequence i owns queries `cu_seq_lens_q[i]:cu_seq_lens_q[i+1]` and keys likewise. The
    answer has the shape `sdpa_attention_forward` gives: `[1, q_tokens, heads, dim]`.
    """
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if isinstance(cu_k, dict):  # one entry per layer type; only full attention comes here
        (cu_k,) = cu_k.values()
    q_bounds, k_bounds = cu_q.tolist(), cu_k.tolist()
    gqa = key.shape[1] != query.shape[1]
    outputs = []
    for i in range(len(q_bounds) - 1):
        q0, q1, k0, k1 = q_bounds[i], q_bounds[i + 1], k_bounds[i], k_bounds[i + 1]
        q_len, k_len = q1 - q0, k1 - k0
        if q_len == 0:
            continue
        q, k, v = query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1]
        mask = None
        if 1 < q_len < k_len:  # new tokens after cached ones: causal, aligned to the end
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
            mask = mask.tril(k_len - q_len)
        outputs.append(
            torch.nn.functional.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                scale=scaling,
                is_causal=q_len == k_len and q_len > 1,
                enable_gqa=gqa,
            )
        )
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def applies_to(config: PretrainedConfig) -> bool:
    """Whether every attention layer of the model is full (causal) attention."""
    text = config.get_text_config()
    if getattr(text, "sliding_window", None) is not None:
        return False
    return all(t == "full_attention" for t in getattr(text, "layer_types", None) or [])


AttentionInterface.register(NAME, varlen_sdpa_forward)
