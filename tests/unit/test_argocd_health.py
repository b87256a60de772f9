"""The Argo CD health check (charts/snowtrain/argocd/health.lua) run by a real Lua interpreter.

Argo CD evaluates the script with the live object bound to the global ``obj`` and reads the
returned table's ``status``/``message``; lupa embeds the same Lua language, so a status that
maps wrongly here maps wrongly in Argo CD too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

SCRIPT = Path(__file__).resolve().parents[2] / "charts/snowtrain/argocd/health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return result["status"], result["message"]


def job(status: dict[str, Any] | None, *, serving: bool = False, generation: int = 1) -> dict:
    spec: dict[str, Any] = {"task": "classification", "data": {"table": "REVIEWS"}}
    if serving:
        spec["serving"] = {"replicas": 1}
    obj: dict[str, Any] = {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "sentiment", "namespace": "ml", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def test_no_status_yet_is_progressing() -> None:
    assert health(job(None)) == (
        "Progressing",
        "Waiting for the snowtrain operator to report status",
    )


def test_running_reports_progress_and_loss() -> None:
    status, message = health(
        job(
            {
                "observedGeneration": 1,
                "phase": "Running",
                "conditions": [cond("Running", "True"), cond("Ready", "False", "Training")],
                "progress": {"percent": 41.7, "step": 10, "totalSteps": 24},
                "metrics": {"trainLoss": 0.693147},
            }
        )
    )
    assert status == "Progressing"
    assert message == "Running: 42%, step 10/24, loss 0.6931"


def test_succeeded_without_serving_is_healthy() -> None:
    status, _ = health(
        job(
            {
                "observedGeneration": 1,
                "phase": "Succeeded",
                "conditions": [
                    cond("Succeeded", "True", "TrainingSucceeded"),
                    cond("Ready", "True", "TrainingSucceeded", "model at pvc://models/ml/x"),
                ],
            }
        )
    )
    assert status == "Healthy"


def test_succeeded_with_serving_not_ready_is_progressing() -> None:
    status, message = health(
        job(
            {
                "observedGeneration": 1,
                "phase": "Succeeded",
                "conditions": [
                    cond("Succeeded", "True"),
                    cond("ServingReady", "False", "Rollout", "0/1 replicas ready"),
                    cond("Ready", "False", "ServingNotReady"),
                ],
            },
            serving=True,
        )
    )
    assert (status, message) == (
        "Progressing",
        "Training succeeded; waiting for the model server: 0/1 replicas ready",
    )


def test_succeeded_and_serving_ready_is_healthy() -> None:
    status, _ = health(
        job(
            {
                "observedGeneration": 1,
                "phase": "Succeeded",
                "conditions": [
                    cond("Succeeded", "True"),
                    cond("ServingReady", "True"),
                    cond("Ready", "True"),
                ],
            },
            serving=True,
        )
    )
    assert status == "Healthy"


def test_failed_is_degraded_with_classified_reason() -> None:
    status, message = health(
        job(
            {
                "observedGeneration": 1,
                "phase": "Failed",
                "conditions": [cond("Failed", "True", "DataError", "column LABEL: 3 nulls")],
                "failure": {
                    "reason": "DataError",
                    "message": "column LABEL has 3 null values",
                    "exitCode": 65,
                },
            }
        )
    )
    assert (status, message) == ("Degraded", "DataError: column LABEL has 3 null values")


def test_failed_condition_alone_is_degraded() -> None:
    status, message = health(
        job({"phase": "Running", "conditions": [cond("Failed", "True", "OOMKilled", "oom")]})
    )
    assert (status, message) == ("Degraded", "OOMKilled: oom")


@pytest.mark.parametrize(
    "status_block",
    [
        {"phase": "Suspended", "conditions": [cond("Suspended", "True", "", "spec.suspend")]},
        {"phase": "Running", "conditions": [cond("Suspended", "True", "", "spec.suspend")]},
    ],
)
def test_suspended(status_block: dict[str, Any]) -> None:
    assert health(job(status_block)) == ("Suspended", "Suspended: spec.suspend")


def test_status_for_an_older_generation_is_progressing() -> None:
    """After an edit, a stale Healthy must not be reported before the operator catches up."""
    status, message = health(
        job(
            {"observedGeneration": 1, "phase": "Succeeded", "conditions": [cond("Ready", "True")]},
            generation=2,
        )
    )
    assert (status, message) == (
        "Progressing",
        "Waiting for the operator to observe generation 2",
    )


def test_pending_without_progress() -> None:
    assert health(job({"phase": "Queued", "conditions": []})) == ("Progressing", "Queued")
