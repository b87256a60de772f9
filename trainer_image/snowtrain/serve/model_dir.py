"""Reading an exported model directory (contracts §1): which task it serves, its name, labels.

The trainer records the task in `snowtrain.json`; directories exported by other tools (or a
plain `save_pretrained`) have none, so the architecture name in `config.json` decides.
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
    return ModelInfo(path=root, name=str(served), task=task, labels=labels, lineage=lineage)
