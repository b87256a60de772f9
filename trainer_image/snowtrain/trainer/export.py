"""Export the trained model directory (README: "The trainer contract", **Out**), atomically.

Everything is written into a sibling temp directory first and renamed into place, so the
server and the operator never see half a model. Lineage carries the trainer config (which
holds no secret by construction) and the data fingerprint; every JSON file still passes
through the redactor as a second line of defence.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from snowtrain.api.events import DataLineage, now_iso
from snowtrain.api.trainer_config import TrainerConfig
from snowtrain.api.version import snowtrain_version

from .durable import fsync_dir, fsync_tree
from .redact import Redactor


def lineage(
    config: TrainerConfig, data: DataLineage | None, labels: list[str] | None
) -> dict[str, Any]:
    """snowtrain.json: what was trained, from what, with which settings."""
    record: dict[str, Any] = {
        "snowtrainVersion": snowtrain_version(),
        "kind": config.kind,
        "name": config.name,
        "namespace": config.namespace,
        "task": config.task,
        "baseModel": config.base_model,
        "data": {
            "rows": data.rows if data else None,
            "queryId": data.query_id if data else None,
            "fingerprint": data.fingerprint if data else None,
        },
        "config": config.to_wire(),
        "createdAt": now_iso(),
    }
    if labels is not None:
        record["labels"] = list(labels)
    return record


def export_model(
    out_dir: str | Path,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    lineage_record: dict[str, Any],
    metrics: dict[str, Any],
    labels: list[str] | None = None,
    lora_merge: bool | None = None,
    redactor: Redactor | None = None,
) -> Path:
    """Write the model directory at ``out_dir`` (replacing an older export) and return it.

    ``lora_merge`` is None for full fine-tuning; True/False when ``model`` is a peft model
    whose adapter is merged into the weights or exported alongside them. Either way the
    adapter is saved under ``adapter/``, and ``snowtrain.json`` records which it is in
    ``lora`` {``adapter``: "adapter", ``merged``}: the server applies the adapter to the
    top-level weights only when ``merged`` is false, so it is never applied twice.
    """
    redactor = redactor or Redactor()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()

    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    if lora_merge is not None:
        from .lora import ADAPTER_DIR, save_adapter_and_unwrap

        model = save_adapter_and_unwrap(model, tmp, merge=lora_merge)
        lineage_record = {
            **lineage_record,
            "lora": {"adapter": ADAPTER_DIR, "merged": lora_merge},
        }
    plain: PreTrainedModel = model
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)

    def write_json(name: str, obj: dict[str, Any]) -> None:
        (tmp / name).write_text(redactor(json.dumps(obj, indent=2, sort_keys=True)) + "\n")

    write_json("snowtrain.json", lineage_record)
    write_json("metrics.json", metrics)
    if labels is not None:
        write_json("label_map.json", {"id2label": {str(i): lab for i, lab in enumerate(labels)}})

    # Swap: the old export (a previous attempt) moves aside, the new one takes its name.
    fsync_tree(tmp)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _remove_leftovers(out: Path) -> None:
    """Temp and set-aside directories of an export killed mid-way (an earlier attempt)."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for path in out.parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
