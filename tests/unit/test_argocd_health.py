"""The Argo CD health check (charts/snowtrain/argocd/health.lua) run by a real Lua interpreter.

Argo CD evaluates the script with gopher-lua, which implements Lua 5.1, with the live object
bound to the global ``obj``, and reads the returned table's ``status``/``message``. Every case
runs under lupa's PUC Lua 5.1 runtime (so a construct newer than 5.1 -- ``//``, ``goto``,
bitwise operators, ``utf8``, ``math.type`` -- fails here as it would in Argo CD), and under
each other runtime this lupa ships, so a status that maps wrongly here maps wrongly there too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lupa
import lupa.lua51  # required: Argo CD's Lua is 5.1 (a lupa without it fails here, loudly)
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "charts/snowtrain/argocd/health.lua"
OTHER_RUNTIMES = sorted(
    m.name for m in pkgutil.iter_modules(lupa.__path__) if m.name.startswith("lua")
)
RUNTIMES = ["lua51", *(name for name in OTHER_RUNTIMES if name != "lua51")]

Health = Callable[[dict[str, Any]], tuple[str, str]]


@pytest.fixture(params=RUNTIMES)
def health(request: pytest.FixtureRequest) -> Health:
    """Run the script on `obj` in a fresh runtime; return (status, message)."""
    runtime = importlib.import_module(f"lupa.{request.param}").LuaRuntime

    def run(obj: dict[str, Any]) -> tuple[str, str]:
        lua = runtime(unpack_returned_tuples=True)
        lua.globals().obj = lua.table_from(obj, recursive=True)
        result = lua.execute(SCRIPT.read_text())
        return result["status"], result["message"]

    return run


def test_the_script_compiles_as_lua_5_1() -> None:
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1"
    assert lua.eval("jit") is None  # PUC Lua 5.1, not LuaJIT (which accepts goto)
    compile_51 = lua.eval("function(src) local f, err = loadstring(src, '=health.lua'); return f ~= nil, err end")  # fmt: skip
    compiled, error = compile_51(SCRIPT.read_text())
    assert compiled, error
    assert compile_51("local x = 7 // 2") == (False, "health.lua:1: unexpected symbol near '/'")


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


def test_no_status_yet_is_progressing(health: Health) -> None:
    assert health(job(None)) == (
        "Progressing",
        "Waiting for the snowtrain operator to report status",
    )


def test_running_reports_progress_and_loss(health: Health) -> None:
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


def test_succeeded_without_serving_is_healthy(health: Health) -> None:
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


def test_succeeded_without_a_ready_condition_is_healthy(health: Health) -> None:
    """An operator that sets no Ready condition: training success is the goal."""
    status = {"observedGeneration": 1, "phase": "Succeeded", "conditions": [cond("Succeeded", "True")]}  # fmt: skip
    assert health(job(status)) == ("Healthy", "Training succeeded")


def test_succeeded_with_serving_not_ready_is_progressing(health: Health) -> None:
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


def test_succeeded_with_a_failing_model_server_is_degraded(health: Health) -> None:
    why = "0/1 serving pods ready; pod j-serve-1's server exited 1 (Error, 2 restart(s)): error: model failed to load: OSError"  # fmt: skip
    conditions = [cond("Succeeded", "True"), cond("ServingReady", "False", "ServerFailing", why)]
    status = {"observedGeneration": 1, "phase": "Succeeded", "conditions": conditions}
    assert health(job(status, serving=True)) == (
        "Degraded",
        f"Training succeeded; the model server is failing: {why}",
    )


def test_succeeded_and_serving_ready_is_healthy(health: Health) -> None:
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


def test_failed_is_degraded_with_classified_reason(health: Health) -> None:
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


def test_failed_condition_alone_is_degraded(health: Health) -> None:
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
def test_suspended(health: Health, status_block: dict[str, Any]) -> None:
    assert health(job(status_block)) == ("Suspended", "Suspended: spec.suspend")


def test_status_for_an_older_generation_is_progressing(health: Health) -> None:
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


def test_pending_without_progress(health: Health) -> None:
    assert health(job({"phase": "Queued", "conditions": []})) == ("Progressing", "Queued")


def test_a_running_batch_prediction_reports_its_rows_and_a_finished_one_is_healthy(
    health: Health,
) -> None:
    prediction = job(
        {
            "observedGeneration": 1,
            "phase": "Running",
            "conditions": [cond("Running", "True"), cond("Ready", "False", "Running")],
            "rows": {"done": 20000, "total": 80000, "percent": 25.0},
        }
    )
    prediction["kind"] = "BatchPrediction"
    assert health(prediction) == ("Progressing", "Running: 20000/80000 rows")
    prediction["status"] = {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "conditions": [cond("Ready", "True", "Succeeded", "every row was predicted and written")],
    }
    assert health(prediction) == ("Healthy", "Ready: every row was predicted and written")
