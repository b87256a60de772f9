"""TrainingSchedule: when ticks fall, what a tick creates, what admission refuses, and how the
endpoint's tracks and the canary's error rate are read."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from snowtrain.api.schedule import run_name
from snowtrain.api.validation import InvalidJob, parse_schedule
from snowtrain.operator import children as ch
from snowtrain.operator import schedule_children as sch
from snowtrain.operator.canary import request_counts
from snowtrain.operator.policy import policy_errors
from snowtrain.operator.schedule_ticks import ticks
from snowtrain.operator.server_pods import crash_of
from snowtrain.operator.settings import OperatorSettings
from snowtrain.operator.webhook import review
from snowtrain.serve.metrics import ServerMetrics

SETTINGS = OperatorSettings(trainer_image="snowtrain/trainer:test", image_pull_policy="Never")
TICK = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def schedule(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {"name": "sentiment", "namespace": "ml", "uid": "s-1"},
        "spec": {
            "schedule": "0 * * * *",
            "dataTrigger": {"column": "loaded_at"},
            "jobTemplate": {
                "kind": "FineTuneJob",
                "metadata": {"labels": {"team": "search"}},
                "spec": {
                    "baseModel": {"uri": "pvc://models/base/minilm"},
                    "data": {"table": "REVIEWS", "snowflake": {"secretRef": {"name": "sf"}}},
                    "output": {"volumeClaimName": "models"},
                    "promotion": {"metric": "evalAccuracy", "maxRegression": 0.01},
                    "serving": {"replicas": 3},
                },
            },
            "serving": {"replicas": 2, "canary": {"replicas": 1, "durationSeconds": 60}},
        },
    }
    body["spec"].update(spec)
    return body


def test_only_the_newest_due_tick_counts_and_the_next_is_known() -> None:
    now = datetime(2026, 12, 6, 15, 30, 20, tzinfo=UTC)
    every_minute = ticks("* * * * *", None, now - timedelta(hours=5), now)
    assert every_minute.due == datetime(2026, 12, 6, 15, 30, tzinfo=UTC)  # not 300 ticks
    assert every_minute.next == datetime(2026, 12, 6, 15, 31, tzinfo=UTC)
    assert every_minute.late_seconds == 20
    handled = ticks("* * * * *", None, datetime(2026, 12, 6, 15, 30, tzinfo=UTC), now)
    assert handled.due is None  # a tick is never handled twice


def test_a_schedule_is_read_in_its_time_zone_across_daylight_saving() -> None:
    winter = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    got = ticks("0 2 * * *", "Europe/Berlin", winter - timedelta(days=2), winter)
    assert got.due == datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # 02:00 CET
    summer = datetime(2026, 7, 6, 12, 0, tzinfo=UTC)
    got = ticks("0 2 * * *", "Europe/Berlin", summer - timedelta(days=2), summer)
    assert got.due == datetime(2026, 7, 6, 0, 0, tzinfo=UTC)  # 02:00 CEST


def test_admission_names_the_field_and_the_reason() -> None:
    with pytest.raises(InvalidJob, match=r"spec.schedule: .*not a cron schedule"):
        parse_schedule(schedule(schedule="every hour"))
    with pytest.raises(InvalidJob, match=r"spec.schedule"):
        parse_schedule(schedule(schedule="0 0 * * * *"))  # seconds: not Kubernetes cron
    with pytest.raises(InvalidJob, match=r"spec.timeZone: .*unknown time zone 'Mars/Base'"):
        parse_schedule(schedule(timeZone="Mars/Base"))
    bad = schedule()
    bad["spec"]["jobTemplate"]["spec"]["training"] = {"batchSize": 0}
    with pytest.raises(InvalidJob, match=r"spec.jobTemplate.spec.training.batchSize"):
        parse_schedule(bad)
    long = schedule()
    long["metadata"]["name"] = "a" * 40
    with pytest.raises(InvalidJob, match=r"metadata.name: at most 36"):
        parse_schedule(long)
    assert parse_schedule(schedule(schedule="@daily", timeZone="America/New_York"))


def test_a_schedule_is_held_to_what_its_runs_would_be_allowed() -> None:
    foreign = schedule()
    foreign["spec"]["jobTemplate"]["spec"]["image"] = "evil.example/miner:1"
    errors = policy_errors(parse_schedule(foreign), SETTINGS)
    assert [e.path for e in errors] == ["spec.jobTemplate.spec.image"]
    strict = SETTINGS.model_copy(update={"serving_auth_required": True})
    errors = policy_errors(parse_schedule(schedule()), strict)
    assert [e.path for e in errors] == ["spec.serving.auth"]
    assert review("CREATE", foreign, None, SETTINGS) == [str(policy_errors(parse_schedule(foreign), SETTINGS)[0])]  # fmt: skip


def test_a_schedule_stays_editable_whatever_it_did() -> None:
    old = {**schedule(), "status": {"phase": "Active", "job": {"name": "x"}}}
    new = schedule(suspend=True, schedule="*/5 * * * *")
    assert review("UPDATE", new, old, SETTINGS) == []


def test_a_tick_creates_one_run_named_from_it_owned_by_the_schedule() -> None:
    s = parse_schedule(schedule())
    champion = "pvc://models/finetunejob/ml/sentiment-29000000"
    run = sch.build_run(s, TICK, champion_uri=champion, fingerprint="abc", rows=12)
    assert run["metadata"]["name"] == run_name("sentiment", TICK) == f"sentiment-{int(TICK.timestamp()) // 60}"  # fmt: skip
    assert run["kind"] == "FineTuneJob"
    assert run["metadata"]["ownerReferences"][0]["uid"] == "s-1"
    assert run["metadata"]["labels"] == {"team": "search", sch.LABEL_SCHEDULE: "sentiment", ch.LABEL_MANAGED_BY: "snowtrain"}  # fmt: skip
    assert run["metadata"]["annotations"][sch.ANNOTATION_FINGERPRINT] == "abc"
    assert run["metadata"]["annotations"][sch.ANNOTATION_TICK] == "2026-12-06T10:00:00Z"
    assert "serving" not in run["spec"]  # the schedule serves
    assert run["spec"]["promotion"]["championUri"] == champion
    template = s.spec.job_template.spec
    assert "serving" in template and "championUri" not in template["promotion"]  # untouched


def test_a_template_output_path_gets_one_directory_per_run() -> None:
    body = schedule()
    body["spec"]["jobTemplate"]["spec"]["output"]["path"] = "sentiment"
    run = sch.build_run(parse_schedule(body), TICK, champion_uri=None)
    assert run["spec"]["output"]["path"] == f"sentiment/{run['metadata']['name']}"
    assert "championUri" not in run["spec"]["promotion"]  # nothing in service yet


def test_the_probe_is_a_small_boxed_pod_with_no_secret_in_its_config() -> None:
    s = parse_schedule(schedule())
    job = sch.build_probe_job(s, TICK, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["python", "-m", "snowtrain.probe"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert job["metadata"]["name"] == f"sentiment-probe-{int(TICK.timestamp()) // 60}"
    config = json.loads(sch.build_probe_config_map(s, TICK)["data"]["config.json"])
    assert config["column"] == "LOADED_AT" and config["table"] == "REVIEWS"
    assert config["snowflake"]["credentialsDir"] == ch.CREDENTIALS_DIR
    assert "password" not in json.dumps(config).lower()


def test_the_endpoint_is_one_service_over_a_stable_and_a_canary_track() -> None:
    s = parse_schedule(schedule())
    model = "pvc://models/finetunejob/ml/sentiment-29000000"
    stable = sch.build_endpoint_deployment(s, SETTINGS, run="sentiment-29000000", model_uri=model, track=sch.STABLE)  # fmt: skip
    canary = sch.build_endpoint_deployment(s, SETTINGS, run="sentiment-29000060", model_uri=model, track=sch.CANARY)  # fmt: skip
    service = sch.build_endpoint_service(s)
    assert stable["metadata"]["name"] == service["metadata"]["name"] == "sentiment-serve"
    assert canary["metadata"]["name"] == "sentiment-serve-canary"
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (2, 1)
    for deployment in (stable, canary):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()  # the Service sees both
    assert stable["spec"]["selector"] != canary["spec"]["selector"]
    assert stable["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert stable["metadata"]["annotations"][sch.ANNOTATION_RUN] == "sentiment-29000000"
    assert stable["metadata"]["annotations"][sch.ANNOTATION_MODEL] == model


def test_pruning_a_run_deletes_its_model_directory_only() -> None:
    s = parse_schedule(schedule())
    job = sch.build_prune_job(s, "sentiment-1", "pvc://models/finetunejob/ml/sentiment-1", SETTINGS)  # fmt: skip
    assert job is not None
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == f"{SETTINGS.model_mount_path}/finetunejob/ml/sentiment-1"
    assert sch.build_prune_job(s, "x", "/abs/path", SETTINGS) is None  # not on a claim


def test_the_canary_error_rate_counts_answers_not_health_checks() -> None:
    metrics = ServerMetrics()
    for route, status, n in (
        ("/v1/models/{name}:predict", "200", 40),
        ("/v1/models/{name}:predict", "503", 3),
        ("/v1/completions", "500", 1),
        ("/readyz", "503", 7),
        ("/healthz", "200", 9),
        ("/v1/models/{name}:predict", "400", 2),
    ):
        for _ in range(n):
            metrics.request_latency.labels(route, "POST", status).observe(0.01)
    text = generate_latest(metrics.registry).decode()
    assert request_counts(text) == (46, 4)


def _pod(*statuses: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "s-serve-canary-1"},
        "status": {"containerStatuses": list(statuses)},
    }


def test_a_canary_whose_server_ended_is_a_crash_with_its_last_line() -> None:
    """A server that exited on its own (a model that would not load, the OOM killer) fails
    the canary at once; one that runs, or left on SIGTERM with 0, does not."""
    running = {"restartCount": 0, "state": {"running": {}}}
    assert crash_of(_pod(running)) is None
    assert crash_of({"metadata": {"name": "p"}, "status": {}}) is None  # not scheduled yet
    said = "Traceback ...\nerror: model failed to load: SafetensorError: header too large\n"
    restarted = {
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": said}},
    }
    assert crash_of(_pod(restarted)) == (
        "pod s-serve-canary-1's server exited 1 (Error, 2 restart(s)): "
        "error: model failed to load: SafetensorError: header too large"
    )
    oom = {"restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    assert crash_of(_pod(oom)) == "pod s-serve-canary-1's server exited 137 (OOMKilled, 0 restart(s))"  # fmt: skip
    clean = {"restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    assert crash_of(_pod(clean)) is None
    long = {"restartCount": 1, "lastState": {"terminated": {"exitCode": 1, "message": "x" * 5000}}}
    assert len(crash_of(_pod(long)) or "") < 400  # the log's tail, not the whole log


def test_an_endpoint_whose_server_exits_says_why_in_its_conditions() -> None:
    from snowtrain.api.schedule import ServedModel, ServingStatus, TrainingScheduleStatus
    from snowtrain.operator.schedule import _conditions, _State

    sched = parse_schedule(schedule())
    now = TICK + timedelta(minutes=5)
    status = TrainingScheduleStatus(
        observed_generation=1,
        in_service=ServedModel(run="sentiment-1", model="pvc://models/m"),
        serving=ServingStatus(deployment="sentiment-serve", ready_replicas=0),
    )
    why = "pod sentiment-serve-5d-x's server exited 137 (OOMKilled, 4 restart(s))"
    state = _State(sched, {}, TrainingScheduleStatus(), now, [], status, serving_crash=why)
    _conditions(state)
    conds = {c.type: c for c in state.status.conditions}
    assert (conds["Serving"].status, conds["Serving"].reason) == ("False", "ServerFailing")
    assert conds["Serving"].message == f"run sentiment-1's model: {why}"
    assert conds["Ready"].reason == "ServerFailing"


def test_argo_cd_reads_a_schedule_without_a_model_as_progressing() -> None:
    import lupa.lua51

    from .test_argocd_health import SCRIPT

    obj = copy.deepcopy(schedule())
    obj["metadata"]["generation"] = 1
    obj["status"] = {
        "observedGeneration": 1,
        "phase": "Active",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "NoModelYet",
                "message": "no run has been promoted yet",
            }
        ],
    }
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    assert (result["status"], result["message"]) == ("Progressing", "Active: no run has been promoted yet")  # fmt: skip
    obj["status"]["conditions"][0].update(status="True", message="run x's model at http://...")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    assert lua.execute(SCRIPT.read_text())["status"] == "Healthy"
