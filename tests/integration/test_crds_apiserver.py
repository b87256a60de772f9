"""The generated CRDs on a real kube-apiserver: valid jobs are stored, invalid ones are
refused at admission with a message that names the field."""

from __future__ import annotations

import copy
import json

import pytest

from tests.unit.test_api_models import FINETUNE, PRETRAIN

pytestmark = pytest.mark.cluster


def _apply(kubectl, namespace: str, obj: dict):
    obj = copy.deepcopy(obj)
    obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": namespace}
    # --validate=false: the API server itself must refuse bad objects, not kubectl's checks.
    return kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(obj))


@pytest.mark.parametrize("obj", [FINETUNE, PRETRAIN], ids=["finetune", "pretrain"])
def test_valid_jobs_are_accepted_with_server_side_defaults(kubectl, namespace, obj):
    result = _apply(kubectl, namespace, obj)
    assert result.returncode == 0, result.stderr
    kind = obj["kind"].lower()
    got = kubectl("get", kind, obj["metadata"]["name"], "-n", namespace, "-o", "json")
    stored = json.loads(got.stdout)
    # Defaults from the models are applied by the API server itself.
    assert stored["spec"]["training"]["gradientAccumulationSteps"] == 1
    assert stored["spec"]["backoffLimit"] == 2
    assert stored["spec"]["training"]["checkpoint"]["keep"] == 2


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["training"].update(batchSize="large"), "spec.training.batchSize"),
        (lambda s: s.pop("baseModel"), "spec.baseModel"),
        (lambda s: s["training"].update(batchSize=0), "spec.training.batchSize"),
        (lambda s: s.update(task="regression"), "spec.task"),
        (lambda s: s["training"].update(precision="int3"), "spec.training.precision"),
        (lambda s: s["data"].update(table="T; DROP TABLE T"), "spec.data.table"),
    ],
    ids=["wrong-type", "missing-required", "out-of-range", "unknown-enum", "bad-enum", "sql"],
)
def test_invalid_finetune_jobs_are_rejected_naming_the_field(kubectl, namespace, mutate, field):
    obj = copy.deepcopy(FINETUNE)
    obj["metadata"]["name"] = "bad"
    mutate(obj["spec"])
    result = _apply(kubectl, namespace, obj)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert "bad" not in kubectl("get", "ftj", "-n", namespace, "-o", "name").stdout


def test_table_and_query_together_are_rejected(kubectl, namespace):
    obj = copy.deepcopy(PRETRAIN)
    obj["spec"]["data"]["table"] = "DOCS"
    result = _apply(kubectl, namespace, obj)
    assert result.returncode != 0
    assert "spec.data" in result.stderr, result.stderr
