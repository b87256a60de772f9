"""LoRA adapters via peft: wrap before training, save the adapter, optionally merge.

Only the adapters (and a classifier head, when there is one) train; the frozen base comes
back from its source on resume, so checkpoints hold the small trainable part only.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

from snowtrain.api.spec import LoraSpec


def apply_lora(model: PreTrainedModel, spec: LoraSpec, task: str) -> PeftModel:
    """Inject adapters; default targets are every linear projection except the output head."""
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules or "all-linear",
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, config)


def save_adapter_and_unwrap(model: PeftModel, out_dir: Path, *, merge: bool) -> PreTrainedModel:
    """Save ``adapter/`` under ``out_dir``; return the plain model to export as the weights.

    With ``merge`` the adapter is folded into the weights (serve without peft); without it
    the base weights are exported unchanged and the server applies ``adapter/``.
    """
    model.save_pretrained(out_dir / "adapter", safe_serialization=True)
    return model.merge_and_unload() if merge else model.unload()
