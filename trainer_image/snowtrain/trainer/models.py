"""Models and tokenizers: load a base model, or build a new causal LM and train its tokenizer.

Fine-tuning starts from a local directory (an image path, a mounted volume, a PretrainJob's
output) or a hub id where the cluster can reach the hub; ``HF_HUB_OFFLINE=1`` is honoured by
transformers itself and turns a missing model into a clear config error. Pretraining builds a
llama or GPT-2 config from a size preset plus explicit overrides, and a byte-level BPE
tokenizer trained on the corpus with `tokenizers`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from snowtrain.api.spec import ArchitectureSpec, TokenizerSpec

from .errors import InvalidConfig, Unavailable
from .loss import causal_lm_loss
from .metrics import train_flops_per_token

EOS = "<|endoftext|>"

#: (layers, hidden size, heads) per preset; see ArchitectureSpec.size.
SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 64, 2),
    "small": (6, 384, 6),
    "base": (12, 768, 12),
    "medium": (24, 1024, 16),
}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _from_pretrained(loader: Any, source: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and classify failures: config error vs. hub unreachable."""
    looks_local = source.startswith(("/", ".", "~")) or Path(source).exists()
    if looks_local and not Path(source).expanduser().exists():
        raise InvalidConfig(f"model path {source} does not exist")
    try:
        return loader.from_pretrained(
            str(Path(source).expanduser()) if looks_local else source, **kwargs
        )
    except OSError as exc:
        if looks_local or _hub_offline():
            where = "locally (HF_HUB_OFFLINE is set)" if not looks_local else "at that path"
            raise InvalidConfig(f"cannot load {source!r} {where}: {exc}") from exc
        raise Unavailable(f"cannot download {source!r} from the Hugging Face hub: {exc}") from exc


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (EOS when the model has none)."""
    tokenizer = _from_pretrained(AutoTokenizer, source)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InvalidConfig(f"tokenizer of {source!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(
    source: str, labels: list[str], tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel:
    """A sequence classifier with one output per discovered label (a new head if needed)."""
    model = _from_pretrained(
        AutoModelForSequenceClassification,
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
        attn_implementation="sdpa",
    )
    if model.config.pad_token_id is None:  # decoder-only classifiers find the last token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    _fit_to_snowtrain_batches(model, causal_lm=False)
    return model


def load_trained_classifier(source: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A classifier exactly as it was saved: its own head and label names, nothing resized.

    For a model to evaluate, not to train (the champion of an evaluation gate): its logits
    columns mean its ``config.id2label``, which the caller maps to the run's labels by name.
    """
    model = _from_pretrained(
        AutoModelForSequenceClassification,
        source,
        dtype=torch.float32,
        attn_implementation="sdpa",
    )
    if model.config.pad_token_id is None:  # decoder-only classifiers find the last token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    _fit_to_snowtrain_batches(model, causal_lm=False)
    return model


def load_causal_lm(source: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A causal LM in fp32 master weights (autocast lowers precision where it pays)."""
    model = _from_pretrained(
        AutoModelForCausalLM, source, dtype=torch.float32, attn_implementation="sdpa"
    )
    _set_generation_ids(model, tokenizer)
    _fit_to_snowtrain_batches(model, causal_lm=True)
    return model


def _fit_to_snowtrain_batches(model: PreTrainedModel, *, causal_lm: bool) -> None:
    """Fit transformers' defaults to the batches snowtrain feeds.

    * Causal LMs compute their loss with ``loss.causal_lm_loss``: the same value as
      transformers' ``ForCausalLMLoss`` without its two full fp32 copies of the logits. Set
      on the instance, it also spares GPT-2 (whose class maps to no loss name) transformers'
      "unrecognized loss_type" warning, a logging call that would break the compiled graph
      on every forward.
    * Given no attention mask, GPT-2-style models look for the pad id at both ends of every
      row and warn that the input may be padded: a device-to-host sync per forward, and a
      false alarm here. ``collate`` leaves the mask out only when nothing is padded, and
      the pad id is EOS, which packed blocks contain.
    """
    if causal_lm:
        model.loss_function = causal_lm_loss
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.warn_if_padding_and_no_attention_mask = _nothing_is_padded


def _nothing_is_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Stands in for transformers' padding heuristic (see ``_fit_to_snowtrain_batches``)."""


def _set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Servers stop at EOS and pad with the pad id: both must be in generation_config.json."""
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    gen = model.generation_config or GenerationConfig()
    gen.eos_token_id = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    if gen.bos_token_id is None:
        gen.bos_token_id = tokenizer.bos_token_id
    model.generation_config = gen


# --------------------------------------------------------------------------- pretraining
def architecture_dims(arch: ArchitectureSpec) -> dict[str, int]:
    """Preset dims with explicit overrides applied, checked for consistency."""
    layers, hidden, heads = SIZE_PRESETS[arch.size]
    layers = arch.num_layers or layers
    hidden = arch.hidden_size or hidden
    heads = arch.num_heads or heads
    kv_heads = arch.num_kv_heads or heads
    if hidden % heads:
        raise InvalidConfig(
            f"architecture.hiddenSize {hidden} is not divisible by numHeads {heads}"
        )
    if heads % kv_heads:
        raise InvalidConfig(
            f"architecture.numHeads {heads} is not divisible by numKvHeads {kv_heads}"
        )
    if arch.family == "gpt2" and arch.num_kv_heads and kv_heads != heads:
        raise InvalidConfig("architecture.numKvHeads (grouped-query attention) needs family llama")
    if arch.intermediate_size:
        inner = arch.intermediate_size
    elif arch.family == "llama":  # SwiGLU: 8/3 d keeps the parameter count of a 4d MLP
        inner = 64 * -(-8 * hidden // (3 * 64))
    else:
        inner = 4 * hidden
    return {
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "inner": inner,
    }


def build_causal_lm(
    arch: ArchitectureSpec, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> PreTrainedModel:
    """A freshly initialised llama or GPT-2 sized for the tokenizer and sequence length."""
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model = new_causal_lm(arch, len(tokenizer), max_seq_length, **ids)
    _set_generation_ids(model, tokenizer)
    return model


def new_causal_lm(
    arch: ArchitectureSpec, vocab_size: int, max_seq_length: int, **token_ids: int | None
) -> PreTrainedModel:
    """The model a PretrainJob trains, before any tokenizer is attached (the GPU benchmark
    builds it this way, so it measures exactly what jobs run)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    dims = architecture_dims(arch)
    if arch.family == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=dims["hidden"],
            num_hidden_layers=dims["layers"],
            num_attention_heads=dims["heads"],
            num_key_value_heads=dims["kv_heads"],
            intermediate_size=dims["inner"],
            max_position_embeddings=max_seq_length,
            tie_word_embeddings=True,
            attention_dropout=arch.dropout,
            attn_implementation="sdpa",
            **token_ids,
        )
        model: PreTrainedModel = LlamaForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=dims["hidden"],
            n_layer=dims["layers"],
            n_head=dims["heads"],
            n_inner=dims["inner"],
            n_positions=max_seq_length,
            # GPT-2's own tanh-approximated GELU, as one fused kernel. The default "gelu_new"
            # is the same formula in eight tensor ops, each one a kernel launch and a
            # tensor kept for backward.
            activation_function="gelu_pytorch_tanh",
            resid_pdrop=arch.dropout,
            embd_pdrop=arch.dropout,
            attn_pdrop=arch.dropout,
            attn_implementation="sdpa",
            **token_ids,
        )
        model = GPT2LMHeadModel(config)
    _fit_to_snowtrain_batches(model, causal_lm=True)
    return model


def pretraining_flops_per_token(
    model: PreTrainedModel, arch: ArchitectureSpec, seq_len: int
) -> float:
    """Training FLOPs per token of a PretrainJob's model on ``seq_len``-token blocks (for MFU)."""
    dims = architecture_dims(arch)
    return train_flops_per_token(
        sum(p.numel() for p in model.parameters()),
        layers=dims["layers"],
        hidden=dims["hidden"],
        seq_len=seq_len,
    )


def train_tokenizer(
    texts: Iterable[str], spec: TokenizerSpec, model_max_length: int
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style, no unknown tokens) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=model_max_length,
    )
