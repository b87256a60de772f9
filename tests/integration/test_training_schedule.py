"""TrainingSchedule on the real local cluster, with the operator as a subprocess and the fake
trainer (tests/fixtures/fake_trainer.sh) standing in for the trainer image: what the schedule
decides at each tick, and what its endpoint serves.

The fake trainer reports what the test tells it through the template's env: the data probe's
fingerprint (FAKE_DATA_VERSION: new data is a new version), the run's evalAccuracy and the
champion's on the same rows, and a model its server never gets ready on (FAKE_BROKEN_MODEL).
The real trainer, probe and model server run the same story in tests/e2e.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from . import test_operator_lifecycle as lifecycle
from .test_operator_lifecycle import Api, condition, ftj

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

api = lifecycle.api  # the fixtures, under their names
model_claim = lifecycle.model_claim

PLURAL = "trainingschedules"
#: Ticks come every minute: a few of them per step, plus the run's time.
TICK_TIMEOUT = 150


def env(**values: str) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def schedule_body(claim: str, **fake: str) -> dict[str, Any]:
    template = ftj("template", steps=2, step_seconds=1)["spec"]
    template["output"] = {"volumeClaimName": claim}
    template["promotion"] = {"metric": "evalAccuracy", "threshold": 0.6, "maxRegression": 0.01}
    template["podTemplate"]["spec"]["containers"][0]["env"] += env(**fake)
    return {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "* * * * *",
            "dataTrigger": {"column": "LOADED_AT"},
            "successfulRunsHistoryLimit": 2,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"kind": "FineTuneJob", "spec": template},
            "serving": {
                "replicas": 1,
                "resources": {"cpu": "50m", "memory": "32Mi"},
                "canary": {"replicas": 1, "durationSeconds": 10, "readyTimeoutSeconds": 30},
            },
        },
    }


def set_fake(api: Api, body: dict[str, Any], **fake: str) -> None:
    """What the next tick's probe and run report (a spec edit of the template's env)."""
    template = body["spec"]["jobTemplate"]["spec"]
    container = template["podTemplate"]["spec"]["containers"][0]
    kept = [e for e in container["env"] if e["name"] not in fake]
    container["env"] = kept + env(**fake)
    api.patch_spec("nightly", {"jobTemplate": body["spec"]["jobTemplate"]}, PLURAL)


def history(api: Api) -> list[dict[str, Any]]:
    return api.status("nightly", PLURAL).get("history") or []


#: The operator's log tail, for a failure's message (set by the test).
OPERATOR_LOGS: list[Any] = []


def newest(api: Api, **want: Any) -> dict[str, Any]:
    """Wait for a record that says ``want`` (e.g. phase, reason): the newest such one, not
    only the newest record (a run that outlasts a minute has a ConcurrencyForbid tick after
    its own record)."""

    def check() -> dict[str, Any] | None:
        return next((r for r in history(api) if all(r.get(k) == v for k, v in want.items())), None)

    try:
        return api.wait(f"a tick with {want}", check, TICK_TIMEOUT, every=1)
    except AssertionError as exc:
        logs = OPERATOR_LOGS[0](30) if OPERATOR_LOGS else ""
        status = json.dumps(api.status("nightly", PLURAL), indent=1)
        events = "\n".join(
            f"{e.last_timestamp} {e.reason}: {e.message}"
            for e in api.core.list_namespaced_event(api.ns).items
            if e.involved_object.name == "nightly"
        )
        raise AssertionError(f"{exc}\n{status}\nevents:\n{events}\noperator log:\n{logs}") from None


def serving(api: Api) -> dict[str, str]:
    dep = api.apps.read_namespaced_deployment("nightly-serve", api.ns)
    return dep.metadata.annotations or {}


def in_service(api: Api, run: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = api.status("nightly", PLURAL)
        served = (status.get("inService") or {}).get("run")
        ready = condition(status, "Serving").get("status") == "True"
        return status if served == run and ready else None

    status = api.wait(f"{run} in service", check, TICK_TIMEOUT, every=1)
    assert serving(api)["snowtrain.io/run"] == run  # what the Deployment itself serves
    return status


def test_runs_on_new_data_only_gates_canaries_rolls_back_pins_prunes_and_suspends(
    api: Api, model_claim: str, operator_process: Any
) -> None:
    OPERATOR_LOGS[:] = [operator_process.logs]
    body = schedule_body(model_claim, FAKE_DATA_VERSION="v1", FAKE_EVAL_ACCURACY="0.9")
    api.create(body)

    # Run 1 trains and goes into service directly (nothing to canary against).
    first = newest(api, phase="Succeeded")
    run1 = first["name"]
    assert first["dataFingerprint"] == "v1" and first["promoted"] is True
    status = in_service(api, run1)
    assert status["lastSuccessfulRun"]["name"] == run1
    assert api.get(run1)["metadata"]["ownerReferences"][0]["kind"] == "TrainingSchedule"

    # No new data: the next tick is skipped, and says why.
    skipped = newest(api, phase="Skipped", reason="DataUnchanged")
    assert run1 in skipped["message"]

    # New rows with shuffled labels: the run is worse than the model in service on the same
    # rows, ends Succeeded, is not promoted; run 1 keeps serving.
    set_fake(api, body, FAKE_DATA_VERSION="v2", FAKE_EVAL_ACCURACY="0.7",
             FAKE_CHAMPION_ACCURACY="0.9", FAKE_TRAINER_STEPS="8")  # fmt: skip
    # The operator is killed (SIGKILL) while the run trains, and comes back.
    started = newest(api, dataFingerprint="v2")
    operator_process.kill()
    operator_process.start()
    failed_gate = newest(api, phase="Succeeded", dataFingerprint="v2")
    assert failed_gate["name"] == started["name"]
    assert failed_gate["promoted"] is False and failed_gate["reason"] == "GateFailed"
    assert (failed_gate["value"], failed_gate["championValue"]) == (0.7, 0.9)
    run2 = failed_gate["name"]
    gate = api.status(run2)["promotion"]
    assert gate["championModel"] == status["inService"]["model"]
    assert serving(api)["snowtrain.io/run"] == run1

    # Clean rows: the run clears the gate and goes through a canary first.
    set_fake(api, body, FAKE_DATA_VERSION="v3", FAKE_EVAL_ACCURACY="0.93")
    better = newest(api, phase="Succeeded", dataFingerprint="v3")
    run3 = better["name"]
    api.wait(
        "the canary",
        lambda: (api.status("nightly", PLURAL).get("canary") or {}).get("run") == run3,
        TICK_TIMEOUT,
    )
    assert serving(api)["snowtrain.io/run"] == run1  # still, while the canary is on trial
    # Killed during the rollout: the canary's clock is its Deployment's age, not memory.
    operator_process.kill()
    operator_process.start()
    status = in_service(api, run3)
    assert status["previous"]["run"] == run1
    assert "canary" not in status

    # A model whose server never gets ready: its canary is rolled back, run 3 stays.
    set_fake(api, body, FAKE_DATA_VERSION="v4", FAKE_EVAL_ACCURACY="0.95", FAKE_BROKEN_MODEL="1")
    broken = newest(api, reason="CanaryFailed")
    assert broken["promoted"] is False and "ready" in broken["message"]
    assert api.status("nightly", PLURAL)["inService"]["run"] == run3
    assert serving(api)["snowtrain.io/run"] == run3

    # Pinning run 1 rolls back by hand; the status names both.
    api.patch_spec("nightly", {"pinnedRun": run1}, PLURAL)
    status = in_service(api, run1)
    assert status["previous"]["run"] == run3

    # Suspend: no more runs (nor probes).
    api.patch_spec("nightly", {"suspend": True}, PLURAL)
    api.wait("Suspended", lambda: api.status("nightly", PLURAL).get("phase") == "Suspended")
    ticks_before = len(history(api))
    names_before = {j["metadata"]["name"] for j in list_runs(api)}
    api.wait(
        "a suspended tick to pass",
        lambda: (
            api.status("nightly", PLURAL).get("lastScheduleTime")
            != api.status("nightly", PLURAL).get("nextScheduleTime")
        ),
    )
    next_tick = api.status("nightly", PLURAL)["nextScheduleTime"]
    api.wait("the next tick's time to pass", lambda: api.status("nightly", PLURAL).get("lastScheduleTime") == next_tick, TICK_TIMEOUT, every=1)  # fmt: skip
    assert len(history(api)) == ticks_before
    assert {j["metadata"]["name"] for j in list_runs(api)} == names_before

    # One run per tick, whatever the restarts: no tick has two runs, no run two records.
    ticks_of_runs = [j["metadata"]["annotations"]["snowtrain.io/scheduled-time"] for j in list_runs(api)]  # fmt: skip
    assert len(ticks_of_runs) == len(set(ticks_of_runs))
    named = [r["name"] for r in history(api) if r.get("name")]
    assert len(named) == len(set(named))

    # History limit 2: of the four succeeded runs, the oldest not in service, previous or
    # pinned is gone (run 2), its model directory with it.
    remaining = {j["metadata"]["name"] for j in list_runs(api)}
    assert run2 not in remaining and {run1, run3} <= remaining
    prune = api.wait(
        "the prune Job",
        lambda: [j for j in api.batch.list_namespaced_job(api.ns).items if j.metadata.name == f"{run2}-prune"],
    )  # fmt: skip
    assert prune


def list_runs(api: Api) -> list[dict[str, Any]]:
    listed = api.custom.list_namespaced_custom_object(
        "snowtrain.io", "v1alpha1", api.ns, "finetunejobs", label_selector="snowtrain.io/schedule=nightly"
    )  # fmt: skip
    items: list[dict[str, Any]] = listed["items"]
    return items
