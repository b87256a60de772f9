"""The CRDs are generated from the API models and must never drift from them."""

from __future__ import annotations

from pathlib import Path

import yaml

from snowtrain.api.crd import crd, render_all, write
from snowtrain.api.kinds import FineTuneJob

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models():
    stale = write([ROOT / "manifests" / "crds"], check=True)
    assert stale == [], "CRDs are out of date: run `make crds`"


def _walk(node, path="spec"):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    schema = crd(FineTuneJob)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"]):
        assert "type" in node, f"{path} has no type"
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path


def test_printer_columns_and_names():
    doc = yaml.safe_load(render_all()["snowtrain.io_finetunejobs.yaml"])
    version = doc["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Progress", "Loss", "Age"]
    assert doc["spec"]["names"]["shortNames"] == ["ftj"]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["task"]["enum"] == ["classification", "causal-lm"]
    assert spec["properties"]["training"]["properties"]["batchSize"]["minimum"] == 1
