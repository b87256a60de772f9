"""The SQL front door against the real API server and the Snowflake emulator (the unmodified
connector): request rows become FineTuneJobs built from the admin's template, or refusals
with the reason, each answered once; RUNS follows every resource and keeps its row after
the resource is deleted. The shipped DDL (manifests/sql/snowtrain.sql) creates the tables."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from snowtrain.api.kinds import GROUP, VERSION
from snowtrain.bridge.config import BridgeConfig
from snowtrain.bridge.loop import Bridge
from snowtrain.bridge.requests import REQUEST_LABEL
from snowtrain.trainer.data.connection import LazyConnection

DDL = Path(__file__).resolve().parents[2] / "manifests/sql/snowtrain.sql"


@pytest.fixture
def bridge(snowflake_db: Any, kube_api: Any, namespace: str) -> Bridge:
    snowflake_db.run_script(DDL)
    cfg = BridgeConfig.model_validate({
        "namespace": namespace,
        "snowflake": snowflake_db.settings().to_wire(),
        "requestTable": f"{snowflake_db.database}.PUBLIC.FINETUNE_REQUESTS",
        "runsTable": f"{snowflake_db.database}.PUBLIC.RUNS",
        "template": {
            "allowedBaseModels": {"my_pretrained_model": "pvc://models/base/minilm"},
            "allowedDatabases": ["MY_DATABASE"],
            "maxEpochs": 10,
            "spec": {
                "task": "classification",
                "data": {
                    "snowflake": {"secretRef": {"name": "snowflake-credentials"}},
                    "columns": {"text": "TEXT", "label": "LABEL"},
                },
                "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
                "output": {"volumeClaimName": "models"},
                "serving": {"enabled": True},
            },
        },
    })  # fmt: skip
    conn = LazyConnection(cfg.snowflake, env=snowflake_db.env())
    return Bridge(cfg, kube_api, conn)


def _request(db: Any, base: str, table: str, epochs: Any, name: str | None = None) -> str:
    """Insert a request as an analyst would; its id is chosen here (the column's default
    would do, but two rows could not then be told apart by the test)."""
    request_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO FINETUNE_REQUESTS (REQUEST_ID, BASE_MODEL, TRAINING_DATA, EPOCHS, MODEL_NAME) "
        "VALUES (?, ?, ?, ?, ?)",
        (request_id, base, table, epochs, name),
    )
    return request_id


def _answers(db: Any) -> dict[str, tuple[str, str | None, str]]:
    rows = db.execute("SELECT REQUEST_ID, STATUS, JOB_NAME, MESSAGE FROM FINETUNE_REQUESTS")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _jobs(kube_api: Any, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "finetunejobs"
    )
    return list(listed["items"])


def test_a_request_row_becomes_the_templates_job_once_and_bad_rows_are_answered(
    bridge: Bridge, snowflake_db: Any, kube_api: Any, namespace: str
) -> None:
    ok = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.MY_SCHEMA.TRAINING_DATA", 10)
    named = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.S.T2", 2, "Churn_Model")
    bad_base = _request(snowflake_db, "gpt-17", "MY_DATABASE.S.T", 3)
    bad_db = _request(snowflake_db, "my_pretrained_model", "OTHER_DB.S.T", 3)
    bad_epochs = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.S.T3", 500)
    injection = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.S.T; DROP TABLE X", 1)
    bridge.tick()
    answers = _answers(snowflake_db)
    jobs = {j["metadata"]["name"]: j for j in _jobs(kube_api, namespace)}
    status, name, _ = answers[ok]
    assert status == "ACCEPTED" and name in jobs
    job = jobs[name]
    assert job["metadata"]["labels"][REQUEST_LABEL] == ok
    spec = job["spec"]
    assert spec["baseModel"] == {"uri": "pvc://models/base/minilm"}  # the template's mapping
    assert spec["data"]["table"] == "MY_DATABASE.MY_SCHEMA.TRAINING_DATA"
    assert spec["training"]["epochs"] == 10
    assert spec["data"]["snowflake"]["secretRef"] == {"name": "snowflake-credentials"}
    assert spec["resources"]["memory"] == "2Gi" and spec["serving"]["enabled"] is True
    assert answers[named][:2] == ("ACCEPTED", "churn-model")
    for request, field in (
        (bad_base, "BASE_MODEL"), (bad_db, "TRAINING_DATA"), (bad_epochs, "EPOCHS"),
        (injection, "TRAINING_DATA"),
    ):  # fmt: skip
        status, job_name, message = answers[request]
        assert (status, job_name) == ("REFUSED", None), (request, answers[request])
        assert message.startswith(field), message
    assert len(jobs) == 2
    # Another pass (or a restarted bridge) starts nothing twice and rewrites no answer.
    bridge.tick()
    assert len(_jobs(kube_api, namespace)) == 2
    assert _answers(snowflake_db) == answers


def test_a_bridge_that_died_after_creating_the_job_answers_on_its_next_pass(
    bridge: Bridge, snowflake_db: Any, kube_api: Any, namespace: str
) -> None:
    request = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.S.T", 1, "early")
    bridge._create(bridge_request(snowflake_db, request))  # created, never answered
    taken = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.S.T", 1, "early")
    bridge.tick()
    answers = _answers(snowflake_db)
    assert answers[request][:2] == ("ACCEPTED", "early")
    assert answers[taken][0] == "REFUSED" and "exists already" in answers[taken][2]
    assert [j["metadata"]["name"] for j in _jobs(kube_api, namespace)] == ["early"]


def bridge_request(db: Any, request_id: str) -> Any:
    from snowtrain.bridge.requests import REQUEST_COLUMNS, Request

    cols = ", ".join(REQUEST_COLUMNS)
    row = db.execute(f"SELECT {cols} FROM FINETUNE_REQUESTS WHERE REQUEST_ID = ?", (request_id,))
    return Request.of_row(row[0])


def test_runs_follow_the_status_and_outlive_the_resource(
    bridge: Bridge, snowflake_db: Any, kube_api: Any, namespace: str
) -> None:
    request = _request(snowflake_db, "my_pretrained_model", "MY_DATABASE.S.T", 2, "tracked")
    bridge.tick()
    custom = client.CustomObjectsApi(kube_api)
    status = {
        "phase": "Running",
        "progress": {"percent": 40.0, "step": 4, "totalSteps": 10},
        "metrics": {"trainLoss": 0.61, "evalLoss": 0.7},
        "data": {"rows": 900, "queryId": "01b2-q", "fingerprint": "sha256:abc"},
        "job": {"name": "tracked-a1", "startTime": "2026-12-06T10:00:00Z"},
    }
    # What the operator writes while the job trains.
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "finetunejobs", "tracked", {"status": status}
    )
    bridge.tick()
    row = snowflake_db.execute(
        'SELECT "KIND", "NAME", "REQUEST_ID", "PHASE", "PROGRESS_PERCENT", "METRICS":trainLoss, '
        # IS NULL in SQL: the emulator reads a NULL timestamp back as 1970-01-01.
        '"DATA_ROWS", "DATA_FINGERPRINT", "STARTED_AT", "DELETED_AT" IS NULL FROM RUNS '
        'WHERE "NAME" = ?',
        ("tracked",),
    )
    assert len(row) == 1
    kind, name, req, phase, pct, loss, rows, fingerprint, started, alive = row[0]
    assert (kind, name, req, phase, pct) == ("FineTuneJob", "tracked", request, "Running", 40.0)
    assert float(loss) == pytest.approx(0.61) and rows == 900 and fingerprint == "sha256:abc"
    assert str(started).startswith("2026-12-06 10:00:00") and alive is True
    done = {**status, "phase": "Succeeded", "progress": {"percent": 100.0},
            "model": {"uri": "pvc://models/finetunejob/x/tracked"},
            "job": {**status["job"], "completionTime": "2026-12-06T10:05:00Z"}}  # fmt: skip
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "finetunejobs", "tracked", {"status": done}
    )
    bridge.tick()
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "finetunejobs", "tracked")
    bridge.tick()
    phase, uri, deleted = snowflake_db.execute(
        'SELECT "PHASE", "MODEL_URI", "DELETED_AT" IS NOT NULL FROM RUNS WHERE "NAME" = ?',
        ("tracked",),
    )[0]
    assert (phase, uri) == ("Succeeded", "pvc://models/finetunejob/x/tracked")
    assert deleted is True  # the resource is gone; its story is not
    (description,) = snowflake_db.execute(
        "SELECT DESCRIPTION FROM RUN_DESCRIPTIONS WHERE ID = ?", (f"{namespace}/tracked",)
    )[0]
    described = json.loads(description)
    assert described["status"] == "Succeeded" and described["model"].endswith("/tracked")
    assert described["training_result"]["training_loss"] == pytest.approx(0.61)
    assert described["training_data"] == "MY_DATABASE.S.T"
