"""The SQL front door as the chart installs it: off by default; on, one namespace's worth of
permissions, its own Secret, a config the bridge reads, and a pod boxed in like the rest."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from snowtrain.bridge.config import BridgeConfig
from snowtrain.bridge.requests import Refused, Request, build_job, job_name
from tests.tools.helm import helm
from tests.unit.test_manifests import CHART, by_kind, helm_template

ON = [
    "--set", "sqlFrontDoor.enabled=true",
    "--set", "sqlFrontDoor.snowflakeSecret=bridge-snowflake",
    "--set", "sqlFrontDoor.namespace=analytics",
    "--set", "sqlFrontDoor.warehouse=BRIDGE_WH",
    "--set", "sqlFrontDoor.template.allowedBaseModels.minilm=pvc://models/base/minilm",
]  # fmt: skip


def front_door(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "sql-front-door" in d["metadata"]["name"]]


def test_off_by_default() -> None:
    assert front_door(helm_template()) == []


def test_on_it_may_create_finetunejobs_in_one_namespace_and_nothing_else() -> None:
    docs = front_door(helm_template(*ON))
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap", "Deployment", "Role", "RoleBinding", "ServiceAccount",
    ]  # fmt: skip
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "analytics"
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {
        ("finetunejobs", "create"), ("finetunejobs", "get"), ("finetunejobs", "list"),
        ("pretrainjobs", "list"), ("batchpredictions", "list"),
    }  # fmt: skip
    assert by_kind(docs, "ClusterRole") == []
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "snowtrain-system"
    for doc in docs:
        if doc["kind"] in ("Deployment", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"):
            kubernetes_validate.validate(doc, "1.27", strict=True)


def test_the_pod_runs_the_bridge_non_root_with_its_own_secret_and_a_config_it_reads() -> None:
    docs = front_door(helm_template(*ON))
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["python", "-m", "snowtrain.bridge"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Secret files are 0440: the pod's group must own them, or the bridge cannot read them.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 1000
    secret = next(v for v in pod["volumes"] if v["name"] == "snowflake")
    assert secret["secret"]["secretName"] == "bridge-snowflake"
    (cm,) = by_kind(docs, "ConfigMap")
    cfg = BridgeConfig.model_validate(yaml.safe_load(cm["data"]["config.yaml"]))
    assert cfg.namespace == "analytics" and cfg.snowflake.warehouse == "BRIDGE_WH"
    assert cfg.snowflake.credentials_dir == "/var/run/secrets/snowtrain/snowflake"
    assert cfg.template.allowed_base_models == {"minilm": "pvc://models/base/minilm"}
    # The chart's default template makes valid jobs out of a well-formed request.
    job = build_job(Request("r-1", "minilm", "DB.S.T", 2, None), cfg.template, cfg.namespace)
    assert job["spec"]["baseModel"]["uri"] == "pvc://models/base/minilm"


def test_enabled_without_a_secret_or_base_models_is_refused_by_the_schema() -> None:
    result = helm("template", "x", str(CHART), "--set", "sqlFrontDoor.enabled=true", check=False)
    assert result.returncode != 0
    assert "snowflakeSecret" in result.stderr or "allowedBaseModels" in result.stderr


@pytest.mark.parametrize(
    ("request_row", "field"),
    [
        (Request("r-2", "minilm", "DB.S.T", 2, "Bad Name!"), "MODEL_NAME"),
        (Request("r-3", "minilm", "", 2, None), "TRAINING_DATA"),
        (Request("r-4", "minilm", "DB.S.T", "many", None), "EPOCHS"),
        (Request("r-5", "minilm", "DB.S.T", 0, None), "EPOCHS"),
        (Request("r 6; --", "minilm", "DB.S.T", 1, None), "REQUEST_ID"),
    ],
)
def test_a_bad_request_is_refused_naming_its_column(request_row: Request, field: str) -> None:
    (cm,) = by_kind(front_door(helm_template(*ON)), "ConfigMap")
    cfg = BridgeConfig.model_validate(yaml.safe_load(cm["data"]["config.yaml"]))
    with pytest.raises(Refused, match=f"^{field}"):
        build_job(request_row, cfg.template, "analytics")


def test_a_job_is_named_from_the_request() -> None:
    cfg = BridgeConfig.model_validate(
        {"namespace": "a", "template": {"allowedBaseModels": {"m": "/m"}, "spec": {}}}
    )
    assert job_name(Request("0f3c-AB", "m", "T", 1, None), cfg.template) == "req-0f3cab"
    assert job_name(Request("x", "m", "T", 1, "Churn_Model"), cfg.template) == "churn-model"


def test_a_runs_row_says_what_the_status_says_for_every_kind() -> None:
    import json

    from snowtrain.bridge.runs import COLUMNS, run_row, upsert_sql

    job = {
        "kind": "FineTuneJob",
        "metadata": {
            "name": "s",
            "namespace": "ml",
            "uid": "u-1",
            "creationTimestamp": "2026-12-06T09:00:00Z",
            "labels": {"snowtrain.io/request-id": "r-9"},
        },
        "spec": {"data": {"table": "T"}},
        "status": {
            "phase": "Failed",
            "progress": {"percent": 12.5},
            "metrics": {"trainLoss": 0.9},
            "failure": {"reason": "OOMKilled", "message": "the trainer ran out of memory"},
            "job": {"startTime": "2026-12-06T09:01:00Z", "completionTime": "2026-12-06T09:02:00Z"},
        },
    }
    row = run_row(job)
    assert set(row) == set(COLUMNS)
    assert (row["REQUEST_ID"], row["PHASE"], row["PROGRESS_PERCENT"]) == ("r-9", "Failed", 12.5)
    assert (row["FAILURE_REASON"], row["ENDED_AT"]) == ("OOMKilled", "2026-12-06 09:02:00")
    assert json.loads(row["METRICS"]) == {"trainLoss": 0.9}
    prediction = {
        "kind": "BatchPrediction",
        "metadata": {"name": "b", "namespace": "ml", "uid": "u-2"},
        "status": {"phase": "Running", "rows": {"done": 10, "total": 40, "percent": 25.0}},
    }
    row = run_row(prediction)
    assert row["PROGRESS_PERCENT"] == 25.0 and json.loads(row["METRICS"])["done"] == 10
    assert run_row({"kind": "PretrainJob", "metadata": {"uid": "u-3"}})["PHASE"] == "Pending"
    sql = upsert_sql("SNOWTRAIN.PUBLIC.RUNS")
    assert sql.count("?") == len(COLUMNS) and '"SNOWTRAIN"."PUBLIC"."RUNS"' in sql
