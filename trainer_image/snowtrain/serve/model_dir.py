"""Reading an exported model directory: which task it serves, its name, labels.

The directory is what the trainer writes (README: "The trainer contract", **Out**;
``snowtrain.trainer.export``).

The trainer records the task in `snowtrain.json`; directories exported by other tools (or a
plain `save_pretrained`) have none, so the architecture name in `config.json` decides.

A LoRA fine-tune exported with `lora.merge: false` holds the base weights at the top level
and the trained adapter under `adapter/`; `snowtrain.json` says so in `lora` {`adapter`,
`merged`}, and the server must then apply the adapter (`ModelInfo.adapter`). A merged
export also keeps `adapter/`, for reference only: applying it again would add it twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class Task(StrEnum):
    CLASSIFICATION = "classification"
    COMPLETION = "completion"


class ModelDirError(ValueError):
    """The directory is not a model this server can load; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """What the server needs to know about a model directory before loading weights."""

    path: Path
    name: str
    task: Task
    labels: list[str] | None
    lineage: dict[str, Any] | None
    adapter: Path | None = None
    """A LoRA adapter to apply to the weights at `path` (None: the weights are the model)."""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelDirError(f"{path} must hold a JSON object")
    return data


_TASKS = {
    "classification": Task.CLASSIFICATION,
    "causal-lm": Task.COMPLETION,
    "pretrain": Task.COMPLETION,
}


def _task_from_architectures(config: dict[str, Any], path: Path) -> Task:
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return Task.CLASSIFICATION
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return Task.COMPLETION
    raise ModelDirError(
        f"{path}: cannot tell the task: no snowtrain.json and config.json architectures "
        f"{archs} name neither a *ForSequenceClassification nor a *ForCausalLM model"
    )


def _unmerged_adapter(root: Path, lineage: dict[str, Any] | None) -> Path | None:
    """The adapter directory the top-level weights still need, or None.

    The trainer records a LoRA export in `snowtrain.json` as `lora` {`adapter`, `merged`}.
    Directories exported before that record existed say the same through the trainer config
    they carry (`config.training.lora.merge`), with the adapter in `adapter/`.
    """
    if lineage is None:
        return None
    record = lineage.get("lora")
    if record is None:
        config = lineage.get("config")
        training = config.get("training") if isinstance(config, dict) else None
        lora = training.get("lora") if isinstance(training, dict) else None
        if not isinstance(lora, dict) or lora.get("enabled", True) is False:
            return None
        record = {"adapter": "adapter", "merged": lora.get("merge", True)}
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("adapter"), str)
        or not isinstance(record.get("merged"), bool)
    ):
        raise ModelDirError(
            f'{root}/snowtrain.json: lora must be {{"adapter": DIR, "merged": true|false}}, '
            f"not {record!r}"
        )
    if record["merged"]:
        return None
    adapter = root / record["adapter"]
    if not (adapter / "adapter_config.json").is_file():
        raise ModelDirError(
            f"{root}: the LoRA adapter was exported unmerged, but {adapter} holds no "
            "adapter_config.json; the top-level weights alone are the untrained base model"
        )
    return adapter


def inspect_model_dir(path: str | Path, name: str | None = None) -> ModelInfo:
    """Describe the model in `path`; `name` overrides the served name."""
    root = Path(path)
    config = _read_json(root / "config.json")
    if config is None:
        raise ModelDirError(f"{root}: no config.json (is this an exported model directory?)")
    lineage = _read_json(root / "snowtrain.json")
    if lineage is not None and lineage.get("task") is not None:
        task = _TASKS.get(str(lineage["task"]))
        if task is None:
            raise ModelDirError(f"{root}/snowtrain.json: unknown task {lineage['task']!r}")
    else:
        task = _task_from_architectures(config, root)

    labels: list[str] | None = None
    if task is Task.CLASSIFICATION:
        if lineage is not None and lineage.get("labels"):
            labels = [str(x) for x in lineage["labels"]]
        elif config.get("id2label"):
            id2label = config["id2label"]
            labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
        else:
            raise ModelDirError(f"{root}: a classifier needs labels (config.json id2label)")

    served = name or (lineage or {}).get("name") or root.resolve().name
    return ModelInfo(
        path=root,
        name=str(served),
        task=task,
        labels=labels,
        lineage=lineage,
        adapter=_unmerged_adapter(root, lineage),
    )
