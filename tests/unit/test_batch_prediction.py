"""BatchPrediction: what admission refuses, the pod an admin and a user will see, and the
status the operator derives from what it observes (pure parts; the cluster run is in
tests/e2e, the predictor against the emulator in tests/integration/test_batch_predict.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from snowtrain.api.events import (
    PredictionCounts,
    RowsEvent,
    TrainerSummary,
    build_event,
    parse_event,
)
from snowtrain.api.validation import InvalidJob, parse_prediction, parse_resource
from snowtrain.operator import attempts as at
from snowtrain.operator import prediction_children as pch
from snowtrain.operator.policy import policy_errors
from snowtrain.operator.prediction_status import PredictionObserved, compute_prediction
from snowtrain.operator.settings import OperatorSettings
from snowtrain.operator.trainer_log import TrainerReport, parse_trainer_lines
from snowtrain.operator.webhook import review

SETTINGS = OperatorSettings(trainer_image="snowtrain/trainer:test", image_pull_policy="Never")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def bp(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"uri": "pvc://models/finetunejob/ml/sentiment"},
        "input": {
            "snowflake": {"secretRef": {"name": "sf-creds"}, "warehouse": "WH"},
            "table": "REVIEWS",
            "keyColumns": ["ID"],
        },
        "output": {"table": "ANALYTICS.SCORED", "mode": "upsert"},
        "resources": {"cpu": "2", "memory": "4Gi", "nodeSelector": {"pool": "cpu"}},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": "score", "namespace": "ml", "uid": "uid-7"},
        "spec": body,
    }


def refusals(obj: dict[str, Any]) -> str:
    with pytest.raises(InvalidJob) as exc:
        parse_resource(obj)
    return str(exc.value)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"input": {"keyColumns": ["ID", "id"]}}, "keyColumns", "named twice"),
        ({"input": {"keyColumns": ["LABEL"]}}, "keyColumns", "output column"),
        ({"input": {"keyColumns": []}}, "spec.input.keyColumns", "at least 1"),
        ({"input": {"query": "SELECT 1"}}, "spec.input", "exactly one of table or query"),
        (
            {"input": {"table": None, "query": "DELETE FROM REVIEWS"}},
            "spec.input.query",
            "SELECT",
        ),
        ({"input": {"table": "REVIEWS; DROP TABLE X"}}, "spec.input.table", "pattern"),
        ({"output": {"table": "OUT", "mode": "merge"}}, "spec.output.mode", "merge"),
        ({"model": {"uri": "org/some-model"}}, "spec.model.uri", "pvc://CLAIM/PATH"),
        (
            {"model": {"uri": "/m", "fineTuneJobRef": {"name": "x"}}},
            "spec.model",
            "exactly one",
        ),
        ({"batchSize": 0}, "spec.batchSize", "greater than or equal to 1"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(spec: dict, field: str, reason: str) -> None:
    obj = bp(**spec)
    if spec.get("input", {}).get("table", "") is None:
        del obj["spec"]["input"]["table"]
    message = refusals(obj)
    assert field in message and reason in message, message


def test_the_admins_policy_boxes_in_a_prediction_as_a_training_job() -> None:
    job = parse_prediction(
        bp(
            image="evil.example/miner:1",
            input={"snowflake": {"secretRef": {"name": "sf"}, "role": "ACCOUNTADMIN"}},
            podTemplate={"spec": {"serviceAccountName": "cluster-admin-sa"}},
        )
    )
    denied = {e.path for e in policy_errors(job, SETTINGS)}
    assert denied == {
        "spec.image",
        "spec.input.snowflake.role",
        "spec.podTemplate.spec.serviceAccountName",
    }


def test_a_started_run_keeps_its_spec_but_not_its_deadline() -> None:
    old = bp()
    old["status"] = {"phase": "Running", "job": {"name": "score-predict"}}
    new = bp(output={"table": "OTHER"})
    assert any("spec.output" in p for p in review("UPDATE", new, old))
    assert review("UPDATE", bp(activeDeadlineSeconds=600, backoffLimit=5), old) == []


def test_the_pod_runs_the_predictor_non_root_with_the_model_read_only() -> None:
    job = parse_prediction(bp(podTemplate={"metadata": {"labels": {"team": "ml"}}}))
    manifest = pch.build_prediction_job(job, SETTINGS, job.spec.model.uri or "")
    kubernetes_validate.validate(manifest, "1.27", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "snowtrain.predict", "--config",
                                    "/etc/snowtrain/config.json"]  # fmt: skip
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    model = next(v for v in pod["volumes"] if v["name"] == "model")
    assert model["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["model"]["readOnly"] and mounts["snowflake"]["readOnly"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert manifest["spec"]["template"]["metadata"]["labels"]["team"] == "ml"
    assert manifest["spec"]["backoffLimit"] == 3 and manifest["spec"]["parallelism"] == 1
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "BatchPrediction"


def test_the_config_names_the_run_and_where_the_pod_finds_things_never_a_secret() -> None:
    job = parse_prediction(bp())
    cm = pch.build_prediction_config_map(job, SETTINGS, job.spec.model.uri or "", "m")
    config = json.loads(cm["data"]["config.json"])
    assert config["runId"] == "ml/score/uid-7"
    assert config["modelDir"] == "/mnt/base-model/finetunejob/ml/sentiment"
    assert config["input"]["snowflake"]["credentialsDir"].startswith("/var/run/secrets")
    assert config["input"]["keyColumns"] == ["ID"]
    assert config["output"] == {"table": "ANALYTICS.SCORED", "mode": "upsert", "commitRows": 10000}
    assert "password" not in cm["data"]["config.json"].lower()


def test_the_pod_accepts_no_connection() -> None:
    policy = pch.build_prediction_network_policy(parse_prediction(bp()))
    assert policy["spec"]["policyTypes"] == ["Ingress"] and policy["spec"]["ingress"] == []


def observed(current: at.AttemptState | None = None, **kw: Any) -> PredictionObserved:
    return PredictionObserved(
        generation=1,
        old_status=kw.pop("old_status", {}),
        now=NOW,
        stuck_timeout_seconds=600,
        current=current,
        **kw,
    )


def test_waiting_for_the_models_job_says_so() -> None:
    out = compute_prediction(
        observed(model_waiting="waiting for FineTuneJob s to succeed", waits_for_job=True)
    )
    status = out.status.to_wire()
    assert status["phase"] == "Waiting"
    waiting = next(c for c in status["conditions"] if c["type"] == "WaitingForModel")
    assert waiting["status"] == "True" and "FineTuneJob s" in waiting["message"]


def test_rows_lines_become_progress_and_the_end_is_every_row() -> None:
    lines = "\n".join([
        "loading model",
        RowsEvent(rows_done=20_000, rows_total=80_000, rows_per_second=512.5,
                  eta_seconds=117.1, resumed_from_row=10_000).to_json(),
    ])  # fmt: skip
    running = compute_prediction(
        observed(
            at.AttemptState("running", "Running", "predicting"), report=parse_trainer_lines(lines)
        )
    ).status.to_wire()
    assert running["phase"] == "Running"
    assert running["rows"] == {
        "done": 20000, "total": 80000, "percent": 25.0, "perSecond": 512.5,
        "etaSeconds": 117.1, "resumedFrom": 10000, "updatedAt": running["rows"]["updatedAt"],
    }  # fmt: skip
    summary = TrainerSummary.of_exit(
        0,
        predictions=PredictionCounts(
            rows_total=80_000, rows_done=80_000, failed_rows=2, resumed_from_row=30_000
        ),
    )
    done = compute_prediction(
        observed(at.AttemptState("succeeded", termination=summary), old_status=running)
    ).status.to_wire()
    assert done["phase"] == "Succeeded"
    assert done["rows"]["done"] == 80_000 and done["rows"]["percent"] == 100.0
    assert done["rows"]["failed"] == 2 and "etaSeconds" not in done["rows"]
    assert done["rows"]["resumedFrom"] == 30_000  # the last pod's, from its summary
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_a_predictor_that_found_bad_data_fails_the_run_with_its_reason() -> None:
    summary = TrainerSummary.of_exit(
        65, reason="DataError", message="input.keyColumns: 3 keys are shared"
    )
    state = at.AttemptState("failed", "DataError", "input.keyColumns: 3 keys are shared",
                            exit_code=65, termination=summary, active=True)  # fmt: skip
    out = compute_prediction(observed(state))
    status = out.status.to_wire()
    assert status["phase"] == "Failed" and out.stop_job
    assert status["failure"] == {"reason": "DataError", "message": "input.keyColumns: 3 keys are shared", "exitCode": 65}  # fmt: skip


def test_a_decided_run_stays_decided_when_its_job_is_removed() -> None:
    done = compute_prediction(observed(at.AttemptState("succeeded"))).status.to_wire()
    again = compute_prediction(observed(at.AttemptState("gone"), old_status=done))
    assert again.status.to_wire()["phase"] == "Succeeded"


def test_a_pod_stuck_pending_past_the_timeout_fails_the_run() -> None:
    since = (NOW - timedelta(seconds=601)).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = at.AttemptState("queued", "Unschedulable", "0/1 nodes have enough cpu", stuck_since=since, active=True)  # fmt: skip
    out = compute_prediction(observed(state))
    assert out.status.phase == "Failed" and out.status.failure.reason == "Unschedulable"  # type: ignore[union-attr]


def test_rows_events_parse_and_an_unknown_field_is_refused_when_emitting() -> None:
    event = parse_event('{"event":"rows","rowsDone":5,"rowsTotal":9,"newField":1}')
    assert isinstance(event, RowsEvent) and event.rows_done == 5
    assert isinstance(TrainerReport(rows=event).rows, RowsEvent)
    with pytest.raises(ValueError, match="bogus"):
        build_event("rows", rows_done=1, bogus=2)
