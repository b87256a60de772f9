"""Generate the CRDs (apiextensions.k8s.io/v1) from the pydantic models.

The generated files are checked in (manifests/crds, the Helm chart) and a test fails when they
drift from the models. The JSON schema pydantic emits is rewritten into a *structural* schema
the API server accepts: references inlined, ``anyOf [X, null]`` turned into ``X`` + nullable,
free-form objects marked ``x-kubernetes-preserve-unknown-fields``, titles dropped.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from .batch import BatchPrediction
from .kinds import GROUP, VERSION, FineTuneJob, PretrainJob, _JobResource
from .schedule import TrainingSchedule

Resource = type[_JobResource] | type[BatchPrediction] | type[TrainingSchedule]

#: Keys of a JSON schema node that a structural CRD schema may carry.
_ALLOWED = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "nullable",
    "oneOf",
    "format",
    "x-kubernetes-preserve-unknown-fields",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return _resolve(target, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one (already inlined) JSON-schema node into a structural CRD schema node."""
    node = dict(node)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"unsupported union in schema: {any_of}")
        merged = {**non_null[0], **{k: v for k, v in node.items() if k != "default"}}
        if node.get("default") is not None:
            merged["default"] = node["default"]
        node = merged
        node.pop("nullable", None)
    if node.get("default", 0) is None:
        node.pop("default")
    # Kubernetes 1.20 reads an empty-string default as null and rejects the CRD; the models
    # apply the same default when they read the object, so the server need not.
    if node.get("default", 0) == "":
        node.pop("default")
    # JSON Schema 2020 (pydantic) writes exclusive bounds as numbers; the CRD schema (OpenAPI
    # v3.0) wants the bound in minimum/maximum and a boolean flag, or the API server rejects it.
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = node.get(flag)
        if value is not None and not isinstance(value, bool):
            node[bound] = value
            node[flag] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _ALLOWED:
            continue
        if key == "properties":
            out[key] = {
                name: _default_nested(sub, _structural(sub), name in node.get("required", ()))
                for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _structural(value)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _structural(value)
        elif key == "description":
            out[key] = " ".join(str(value).split())
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
        out["type"] = "object"
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _default_nested(raw: dict[str, Any], node: dict[str, Any], required: bool) -> dict[str, Any]:
    """Give an optional, non-nullable sub-object ``default: {}`` so the API server fills in its
    fields' defaults too (it only defaults inside objects that exist). Without this, a spec that
    omits ``training`` would be stored without any of the training defaults."""
    nullable = "anyOf" in raw
    if not required and not nullable and node.get("type") == "object" and node.get("properties"):
        node = {**node, "default": {}}
    return node


def openapi_schema(model: Resource) -> dict[str, Any]:
    """The structural openAPIV3Schema of a kind, generated from its model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    inlined = _resolve(raw, raw.get("$defs", {}))
    inlined.pop("$defs", None)
    props = inlined["properties"]
    schema = {
        "type": "object",
        "description": (model.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _structural(props["spec"]),
            "status": _structural(props["status"]),
        },
    }
    return schema


_JOB_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Progress",
        "type": "number",
        "jsonPath": ".status.progress.percent",
        "description": "Percent of training steps done",
    },
    {"name": "Loss", "type": "number", "jsonPath": ".status.metrics.trainLoss"},
    {"name": "Eval-Loss", "type": "number", "jsonPath": ".status.metrics.evalLoss", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": ".status.failure.reason", "priority": 1},
    {
        "name": "Endpoint",
        "type": "string",
        "jsonPath": ".status.serving.endpoint",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
_PREDICTION_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Progress",
        "type": "number",
        "jsonPath": ".status.rows.percent",
        "description": "Percent of the rows predicted",
    },
    {"name": "Rows", "type": "integer", "jsonPath": ".status.rows.done"},
    {"name": "Output", "type": "string", "jsonPath": ".spec.output.table"},
    {"name": "Rows/s", "type": "number", "jsonPath": ".status.rows.perSecond", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": ".status.failure.reason", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


_SCHEDULE_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Last-Run", "type": "string", "jsonPath": ".status.history[0].name",
     "description": "The newest tick's run"},
    {"name": "Last-Phase", "type": "string", "jsonPath": ".status.history[0].phase",
     "description": "Skipped, Missed, Pending, Running, Succeeded or Failed"},
    {"name": "In-Service", "type": "string", "jsonPath": ".status.inService.run",
     "description": "The run whose model the endpoint serves"},
    {"name": "Next-Run", "type": "string", "jsonPath": ".status.nextScheduleTime"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.run", "priority": 1},
    {"name": "Previous", "type": "string", "jsonPath": ".status.previous.run", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip


def printer_columns(model: Resource) -> list[dict[str, Any]]:
    """What ``kubectl get`` shows of a kind."""
    if model is BatchPrediction:
        return _PREDICTION_COLUMNS
    if model is TrainingSchedule:
        return _SCHEDULE_COLUMNS
    return _JOB_COLUMNS


def crd(model: Resource) -> dict[str, Any]:
    """The CustomResourceDefinition of a kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{model.PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "snowtrain"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": model.KIND,
                "listKind": f"{model.KIND}List",
                "plural": model.PLURAL,
                "singular": model.KIND.lower(),
                "shortNames": list(model.SHORT_NAMES),
                "categories": ["snowtrain"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(model),
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                }
            ],
        },
    }


ALL_KINDS: tuple[Resource, ...] = (FineTuneJob, PretrainJob, BatchPrediction, TrainingSchedule)


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {
        f"{GROUP}_{m.PLURAL}.yaml": yaml.safe_dump(crd(m), sort_keys=False, width=100)
        for m in ALL_KINDS
    }


def write(out_dirs: list[Path], check: bool = False) -> list[Path]:
    """Write (or, with ``check``, compare) the CRDs; returns the files that differ."""
    stale = []
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in render_all().items():
            path = out / name
            if path.exists() and path.read_text() == text:
                continue
            stale.append(path)
            if not check:
                path.write_text(text)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate snowtrain CRDs from the API models")
    parser.add_argument("out", nargs="+", type=Path, help="output directories")
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    stale = write(args.out, check=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
