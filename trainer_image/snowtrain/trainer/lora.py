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


ADAPTER_DIR = "adapter"
"""Where the adapter goes inside the exported model directory."""


def save_adapter_and_unwrap(model: PeftModel, out_dir: Path, *, merge: bool) -> PreTrainedModel:
    """Save ``adapter/`` under ``out_dir``; return the plain model to export as the weights.

    With ``merge`` the adapter is folded into the weights, which then serve without peft;
    ``adapter/`` is kept for reference only. Without it the base weights are returned
    without the adapter (a classifier keeps its trained head, which peft trains as a
    ``modules_to_save`` copy and also saves in ``adapter/``), and the model server applies
    ``adapter/`` to them when it loads the directory (``export_model`` records which case it
    is in ``snowtrain.json``). Either way ``model`` is consumed: its peft layers are removed.
    """
    model.save_pretrained(out_dir / ADAPTER_DIR, safe_serialization=True)
    return model.merge_and_unload() if merge else model.unload()
