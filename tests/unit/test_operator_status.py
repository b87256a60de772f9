"""Status derivation: what a user reads in `kubectl get ftj` and the conditions tools wait on.

Inputs are Job and Pod objects shaped as the Kubernetes 1.20 API returns them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from snowtrain.api.events import now_iso
from snowtrain.api.status import DataStatus, JobStatusBlock, MetricsStatus
from snowtrain.operator import attempts as at
from snowtrain.operator import status as st
from snowtrain.operator import trainer_log

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def iso(delta_s: float = 0) -> str:
    return now_iso(NOW + timedelta(seconds=delta_s))


def k8s_job(*conditions: tuple[str, str], suspend: bool = False, active: int = 0) -> dict:
    return {
        "metadata": {"name": "j-a1", "creationTimestamp": iso(-100)},
        "spec": {"suspend": suspend},
        "status": {
            "active": active,
            "startTime": iso(-100),
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": f"{r} msg", "lastTransitionTime": iso(-1)}
                for t, r in conditions
            ],
        },
    }  # fmt: skip


def pod(phase: str, *, terminated: dict | None = None, waiting: dict | None = None,
        running: bool = False, reason: str | None = None, conditions: list | None = None) -> dict:  # fmt: skip
    state: dict = {}
    if terminated is not None:
        state["terminated"] = terminated
    if waiting is not None:
        state["waiting"] = waiting
    if running:
        state["running"] = {"startedAt": iso(-50)}
    status = {
        "phase": phase,
        "startTime": iso(-90),
        "containerStatuses": [{"name": "trainer", "state": state}],
        "conditions": conditions or [],
    }
    if reason:
        status["reason"] = reason
    return {"metadata": {"creationTimestamp": iso(-90)}, "status": status}


def observed(current: at.AttemptState, **kw) -> st.Observed:
    defaults = dict(
        generation=2,
        now=NOW,
        attempt=1,
        job_name="j-a1",
        current=current,
        output_uri="pvc://models/ftj",
    )
    defaults.update(kw)
    return st.Observed(**defaults)


def conds(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_progress_lines_become_progress_and_metrics() -> None:
    log = "\n".join(
        [
            "loading model",
            json.dumps({"event": "start", "totalSteps": 100, "epochs": 1}),
            json.dumps({"event": "data", "rows": 5000, "queryId": "q-1", "fingerprint": "sha256:ab"}),
            json.dumps({"event": "progress", "step": 42, "totalSteps": 100, "percent": 42.0,
                        "epoch": 0.42, "loss": 0.61, "tokensPerSecond": 900.0, "mfu": 0.41,
                        "etaSeconds": 720.0, "time": "2026-01-01T11:59:58Z"}),
            json.dumps({"event": "eval", "step": 40, "evalLoss": 0.7, "evalAccuracy": 0.8}),
            '{"not": "an event"}',
            "{broken json",
        ]
    )  # fmt: skip
    report = trainer_log.parse_trainer_lines(log)
    running = at.observe_attempt(k8s_job(active=1), [pod("Running", running=True)])
    out = st.compute(observed(running, report=report))
    s = out.status
    assert s["phase"] == "Running"
    assert s["progress"] == {
        "percent": 42.0,
        "step": 42,
        "totalSteps": 100,
        "epoch": 0.42,
        "etaSeconds": 720.0,
        "updatedAt": "2026-01-01T11:59:58Z",
    }
    assert s["metrics"] == {
        "trainLoss": 0.61,
        "tokensPerSecond": 900.0,
        "mfu": 0.41,
        "evalLoss": 0.7,
        "evalAccuracy": 0.8,
    }
    assert s["data"] == {"rows": 5000, "queryId": "q-1", "fingerprint": "sha256:ab"}
    c = conds(s)
    assert c["Running"]["status"] == "True"
    assert c["Ready"]["status"] == "False"
    assert c["Succeeded"]["status"] == "False"
    assert c["Running"]["observedGeneration"] == 2
    assert s["job"] == {"name": "j-a1", "attempts": 1, "startTime": iso(-100)}
    JobStatusBlock.model_validate(s)
    # Without a fresh read (throttled), the last values are kept.
    again = st.compute(observed(running, report=None, old_status=s)).status
    assert again["progress"] == s["progress"]
    assert again["metrics"] == s["metrics"]


def test_every_data_field_the_trainer_reports_reaches_the_status() -> None:
    """status.data holds each field DataStatus declares, as the trainer writes it: from the
    `data` event while it runs, and from the termination message alone once it is done
    (validationRows used to be dropped on both ways)."""
    from snowtrain.trainer.data.profile import DataFingerprint

    wire = DataFingerprint(
        rows=5000, validation_rows=500, query_id="q-1", content_sha256="ab"
    ).to_wire()
    expected = {"rows": 5000, "validationRows": 500, "queryId": "q-1", "fingerprint": "sha256:ab"}
    assert wire == expected
    declared = {f.alias or name for name, f in DataStatus.model_fields.items()}
    assert set(expected) == declared

    log = json.dumps({"event": "data", **wire, "labels": ["negative", "positive"]})
    running = at.observe_attempt(k8s_job(active=1), [pod("Running", running=True)])
    while_running = st.compute(
        observed(running, report=trainer_log.parse_trainer_lines(log))
    ).status
    assert while_running["data"] == expected
    JobStatusBlock.model_validate(while_running)

    summary = {"outcome": "Succeeded", "reason": None, "exitCode": 0, "step": 10,
               "totalSteps": 10, "metrics": {}, "data": wire}  # fmt: skip
    done = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": json.dumps(summary)})  # fmt: skip
    job = k8s_job(("Complete", ""))
    job["status"]["completionTime"] = iso(-1)
    finished = st.compute(observed(at.observe_attempt(job, [done]))).status
    assert finished["phase"] == "Succeeded"
    assert finished["data"] == expected
    JobStatusBlock.model_validate(finished)


def test_every_declared_metric_in_the_termination_message_reaches_the_status() -> None:
    """The trainer's final metrics: each one MetricsStatus declares is copied; the others it
    reports (steps, samplesPerSecond, trainSeconds) are not, or the status would not validate."""
    declared = {f.alias or name for name, f in MetricsStatus.model_fields.items()}
    reported = {name: 1.0 for name in declared} | {
        "steps": 10, "samplesPerSecond": 3.0, "trainSeconds": 9.0,
    }  # fmt: skip
    summary = {"outcome": "Succeeded", "reason": None, "exitCode": 0, "step": 10,
               "totalSteps": 10, "metrics": reported}  # fmt: skip
    done = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": json.dumps(summary)})  # fmt: skip
    job = k8s_job(("Complete", ""))
    job["status"]["completionTime"] = iso(-1)
    status = st.compute(observed(at.observe_attempt(job, [done]))).status
    assert status["metrics"] == {name: 1.0 for name in declared}
    JobStatusBlock.model_validate(status)


def test_success_reports_final_metrics_and_model_and_keeps_transition_times() -> None:
    summary = {
        "outcome": "Succeeded",
        "reason": None,
        "exitCode": 0,
        "step": 100,
        "totalSteps": 100,
        "metrics": {"trainLoss": 0.2, "evalAccuracy": 0.91, "mfu": 0.43},
        "model": {"uri": "pvc://models/ftj", "format": "safetensors", "stage": "@MODELS/ftj"},
        "data": {"rows": 5000, "fingerprint": "sha256:ab"},
    }
    done = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": json.dumps(summary)})  # fmt: skip
    job = k8s_job(("Complete", ""))
    job["status"]["completionTime"] = iso(-1)
    state = at.observe_attempt(job, [done])
    first = st.compute(observed(state)).status
    assert first["phase"] == "Succeeded"
    c = conds(first)
    assert c["Succeeded"]["status"] == "True"
    assert c["Ready"]["status"] == "True"
    assert c["Failed"]["status"] == "False"
    assert first["model"] == {
        "uri": "pvc://models/ftj",
        "format": "safetensors",
        "stage": "@MODELS/ftj",
    }
    assert first["metrics"]["evalAccuracy"] == 0.91
    assert first["metrics"]["mfu"] == 0.43
    assert first["progress"]["percent"] == 100.0
    assert first["job"]["completionTime"] == iso(-1)
    JobStatusBlock.model_validate(first)
    later = st.compute(observed(state, old_status=first, now=NOW + timedelta(minutes=5))).status
    assert conds(later)["Succeeded"]["lastTransitionTime"] == c["Succeeded"]["lastTransitionTime"]


def test_a_succeeded_job_whose_job_object_vanished_stays_succeeded() -> None:
    old = {"phase": "Succeeded", "conditions": [{"type": "Succeeded", "status": "True"}]}
    out = st.compute(observed(at.AttemptState("gone"), old_status=old))
    assert out.phase == "Succeeded"
    assert not out.start_next_attempt


def test_serving_readiness_after_success() -> None:
    state = at.observe_attempt(k8s_job(("Complete", "")), [])
    kw = dict(serving_wanted=True, serving_replicas=2, serving_names=("j-serve", "j-serve"),
              endpoint="http://j-serve.ns.svc:8080")  # fmt: skip
    out = st.compute(observed(state, **kw))
    assert out.deploy_serving
    assert conds(out.status)["ServingReady"]["status"] == "False"
    assert conds(out.status)["Ready"]["status"] == "False"
    dep = {
        "metadata": {"generation": 3},
        "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2},
    }
    s = st.compute(observed(state, deployment=dep, old_status=out.status, **kw)).status
    assert conds(s)["ServingReady"]["status"] == "True"
    assert conds(s)["Ready"]["status"] == "True"
    assert s["serving"] == {
        "deployment": "j-serve",
        "service": "j-serve",
        "endpoint": "http://j-serve.ns.svc:8080",
        "readyReplicas": 2,
    }
    no_claim = st.compute(observed(state, output_uri=None, **kw))
    assert not no_claim.deploy_serving
    assert conds(no_claim.status)["ServingReady"]["reason"] == "NoModelVolume"


def test_a_server_that_exits_is_named_with_its_reason_not_only_counted() -> None:
    """A model that will not load: ServingReady says which pod's server exited and why; the
    Deployment's counts alone would say "0/1 ready" for as long as it restarts."""
    state = at.observe_attempt(k8s_job(("Complete", "")), [])
    kw = dict(serving_wanted=True, serving_replicas=1, serving_names=("j-serve", "j-serve"))
    dep = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "updatedReplicas": 1}}
    why = "pod j-serve-6f7-x2's server exited 1 (Error, 3 restart(s)): error: model failed to load: OSError"  # fmt: skip
    s = st.compute(observed(state, deployment=dep, serving_crash=why, **kw)).status
    ready = conds(s)["ServingReady"]
    assert (ready["status"], ready["reason"]) == ("False", "ServerFailing")
    assert ready["message"] == f"0/1 serving pods ready; {why}"
    assert s["phase"] == "Succeeded"  # the training's outcome stands
    rolling = st.compute(observed(state, deployment=dep, **kw)).status
    assert conds(rolling)["ServingReady"]["reason"] == "RollingOut"
    # Crashes change pods, not the Deployment: a short Deployment is looked at again soon.
    short = observed(state, deployment=dep, **kw)
    assert st.recheck_after(short, None, 10.0) == st.EVENTS_RECHECK_SECONDS
    dep["status"]["readyReplicas"] = 1
    assert st.recheck_after(observed(state, deployment=dep, **kw), None, 10.0) == st.SAFETY_RECHECK_SECONDS  # fmt: skip


def failed_with(pods: list[dict], *conditions: tuple[str, str], **kw) -> dict:
    job = k8s_job(*(conditions or (("Failed", "BackoffLimitExceeded"),)))
    out = st.compute(observed(at.observe_attempt(job, pods), **kw))
    assert out.phase == "Failed"
    assert conds(out.status)["Failed"]["status"] == "True"
    assert conds(out.status)["Ready"]["status"] == "False"
    JobStatusBlock.model_validate(out.status)
    return out.status["failure"]


def test_data_error_from_the_termination_message() -> None:
    summary = {"outcome": "Failed", "reason": "DataError", "exitCode": 65,
               "message": "column LABEL: 3 rows are null"}  # fmt: skip
    p = pod(
        "Failed", terminated={"exitCode": 65, "reason": "Error", "message": json.dumps(summary)}
    )
    assert failed_with([p]) == {
        "reason": "DataError",
        "message": "column LABEL: 3 rows are null",
        "exitCode": 65,
    }


def test_exit_codes_without_a_termination_message() -> None:
    for code, reason in [(64, "InvalidSpec"), (65, "DataError"), (69, "Unavailable")]:
        p = pod("Failed", terminated={"exitCode": code, "reason": "Error", "message": "boom"})
        assert failed_with([p])["reason"] == reason
    generic = pod("Failed", terminated={"exitCode": 1, "reason": "Error", "message": "Traceback"})
    failure = failed_with([generic])
    assert failure["reason"] == "Error"
    assert "code 1" in failure["message"] and "Traceback" in failure["message"]


def test_data_error_is_final_even_while_the_job_would_retry() -> None:
    p = pod("Failed", terminated={"exitCode": 65, "reason": "Error"})
    out = st.compute(observed(at.observe_attempt(k8s_job(active=0), [p])))
    assert out.phase == "Failed"
    assert out.status["failure"]["reason"] == "DataError"


def test_oom_killed() -> None:
    p = pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    failure = failed_with([p])
    assert failure["reason"] == "OOMKilled"
    assert "spec.resources.memory" in failure["message"]


def test_deadline_and_backoff_limit_from_the_job() -> None:
    p = pod("Failed", terminated={"exitCode": 143, "reason": "Error"})
    assert failed_with([p], ("Failed", "DeadlineExceeded"))["reason"] == "DeadlineExceeded"
    assert failed_with([], ("Failed", "BackoffLimitExceeded"))["reason"] == "BackoffLimitExceeded"


def test_unschedulable_is_a_condition_while_pending_then_fails_after_the_timeout() -> None:
    unsched = pod("Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        "lastTransitionTime": iso(-60)}])  # fmt: skip
    state = at.observe_attempt(k8s_job(active=1), [unsched])
    out = st.compute(observed(state, stuck_timeout_seconds=300))
    assert out.phase == "Queued"
    running = conds(out.status)["Running"]
    assert running["status"] == "False"
    assert running["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in running["message"]
    late = st.compute(observed(state, stuck_timeout_seconds=30))
    assert late.phase == "Failed"
    assert late.status["failure"]["reason"] == "Unschedulable"
    assert late.stop_current


def _failed_create(message: str, first_s: float = -60) -> dict:
    return {"reason": "FailedCreate", "message": message, "type": "Warning",
            "firstTimestamp": iso(first_s), "lastTimestamp": iso(-1)}  # fmt: skip


def test_a_pod_refused_by_a_quota_says_so_then_fails_after_the_timeout() -> None:
    """No pod ever exists, so no pod status can say why: the Job's Events do."""
    quota = _failed_create(
        'pods "sentiment-a1-x" is forbidden: exceeded quota: gpu-quota, requested: '
        "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    )
    state = at.observe_attempt(k8s_job(), [], job_events=[quota])
    out = st.compute(observed(state, stuck_timeout_seconds=300))
    assert out.phase == "Queued"
    running = conds(out.status)["Running"]
    assert running["reason"] == "QuotaExceeded" and "gpu-quota" in running["message"]
    late = st.compute(observed(state, stuck_timeout_seconds=30))
    assert late.phase == "Failed" and late.status["failure"]["reason"] == "QuotaExceeded"


def test_a_pod_refused_by_pod_security_fails_at_once() -> None:
    psa = _failed_create(
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true'
    )
    out = st.compute(observed(at.observe_attempt(k8s_job(), [], job_events=[psa])))
    assert out.phase == "Failed"
    assert out.status["failure"]["reason"] == "PodSecurity"
    assert "restricted" in out.status["failure"]["message"]


def test_other_events_of_a_podless_job_change_nothing() -> None:
    other = {"reason": "SuccessfulCreate", "message": "Created pod: x", "firstTimestamp": iso()}
    assert at.observe_attempt(k8s_job(), [], job_events=[other]).reason == "Created"


def test_image_pull_errors() -> None:
    backoff = pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling"})
    out = st.compute(observed(at.observe_attempt(k8s_job(active=1), [backoff])))
    assert out.phase == "Queued"
    assert conds(out.status)["Running"]["reason"] == "ImagePullError"
    invalid = pod("Pending", waiting={"reason": "InvalidImageName", "message": "bad ref"})
    out = st.compute(observed(at.observe_attempt(k8s_job(active=1), [invalid])))
    assert out.phase == "Failed"
    assert out.status["failure"]["reason"] == "ImagePullError"


def test_preempted_attempt_starts_the_next_one() -> None:
    preempted = pod("Failed", terminated={"exitCode": 75, "reason": "Error"})
    state = at.observe_attempt(k8s_job(("Failed", "BackoffLimitExceeded")), [preempted])
    assert state.retryable
    out = st.compute(observed(state, attempt=1, max_attempts=3))
    assert out.start_next_attempt
    assert out.phase == "Queued"
    assert "attempt 2" in conds(out.status)["Running"]["message"]
    evicted = {"metadata": {"creationTimestamp": iso(-5)},
               "status": {"phase": "Failed", "reason": "Evicted", "message": "node low on memory"}}  # fmt: skip
    state = at.observe_attempt(k8s_job(("Failed", "BackoffLimitExceeded")), [evicted])
    assert state.reason == "Evicted"
    exhausted = st.compute(observed(state, attempt=3, max_attempts=3))
    assert exhausted.phase == "Failed"
    assert not exhausted.start_next_attempt
    assert exhausted.status["failure"]["reason"] == "Evicted"


def test_suspend_and_resume_without_job_suspend() -> None:
    # Kubernetes 1.20: suspending deletes the attempt's Job; resuming starts the next attempt.
    gone = at.AttemptState("gone")
    out = st.compute(observed(gone, suspend=True))
    assert out.phase == "Suspended"
    assert conds(out.status)["Suspended"]["status"] == "True"
    assert not out.start_next_attempt
    resumed = st.compute(observed(gone, suspend=False, old_status=out.status))
    assert resumed.start_next_attempt
    assert conds(resumed.status)["Suspended"]["status"] == "False"


def test_suspended_job_object_user_vs_kueue() -> None:
    job = k8s_job(suspend=True)
    assert st.compute(observed(at.observe_attempt(job, [], user_suspended=True), suspend=True)).phase == "Suspended"  # fmt: skip
    queued = st.compute(observed(at.observe_attempt(job, [])))
    assert queued.phase == "Queued"
    assert conds(queued.status)["Running"]["reason"] == "WaitingForAdmission"


def test_invalid_spec_and_waiting_for_base_model() -> None:
    out = st.compute(observed(at.AttemptState("gone"), attempt=0, invalid="spec.data: set exactly one of table or query"))  # fmt: skip
    assert out.phase == "Failed"
    assert out.status["failure"]["reason"] == "InvalidSpec"
    assert "spec.data" in out.status["failure"]["message"]
    wait = st.compute(observed(at.AttemptState("gone"), attempt=0, waits_for_base=True,
                               base_waiting="PretrainJob gpt is Running (42%)"))  # fmt: skip
    assert wait.phase == "Waiting"
    w = conds(wait.status)["WaitingForBaseModel"]
    assert w["status"] == "True" and "gpt" in w["message"]
    go = st.compute(observed(at.AttemptState("gone"), attempt=0, waits_for_base=True))
    assert go.phase == "Pending"
    assert conds(go.status)["WaitingForBaseModel"]["status"] == "False"
    failed = st.compute(observed(at.AttemptState("gone"), attempt=0, waits_for_base=True,
                                 base_failed="PretrainJob gpt failed: DataError"))  # fmt: skip
    assert failed.status["failure"]["reason"] == "BaseModelFailed"


def test_status_patch_nulls_what_is_no_longer_true() -> None:
    from snowtrain.operator.kube import merge_patch

    old = {
        "phase": "Failed",
        "failure": {"reason": "X"},
        "progress": {"percent": 5, "etaSeconds": 9},
    }
    new = {"phase": "Running", "progress": {"percent": 6}}
    assert merge_patch(old, new) == {
        "phase": "Running",
        "failure": None,
        "progress": {"percent": 6, "etaSeconds": None},
    }
    assert merge_patch(new, new) == {}


def test_a_finished_pod_keeps_the_job_running_until_the_job_completes() -> None:
    # Between the pod's exit and the Job controller's Complete condition the phase must not
    # flap back to Queued (a Running -> Queued -> Succeeded event sequence).
    done = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"})
    out = st.compute(observed(at.observe_attempt(k8s_job(active=0), [done])))
    assert out.phase == "Running"


def test_a_pod_failure_the_job_will_retry_is_queued_with_its_reason() -> None:
    crashed = pod("Failed", terminated={"exitCode": 1, "reason": "Error", "message": "boom"})
    out = st.compute(observed(at.observe_attempt(k8s_job(active=0), [crashed])))
    assert out.phase == "Queued"
    assert conds(out.status)["Running"]["reason"] == "Error"
    assert "retries" in conds(out.status)["Running"]["message"]


def test_a_waiting_job_is_looked_at_when_a_look_could_change_it() -> None:
    """Without watch events a queued job needs a look only when time alone changes its
    status: just after a stuck pod's timeout, and (Events explain a Job without pods) after
    the no-pod grace, then every EVENTS_RECHECK_SECONDS. A pod simply pending waits for its
    own events; only a safety look remains, however many jobs wait."""
    stuck = at.AttemptState("queued", "Unschedulable", "no node", stuck_since=iso(-100))
    assert st.recheck_after(observed(stuck, stuck_timeout_seconds=300), None, 10) == 201
    overdue = at.AttemptState("queued", "Unschedulable", "no node", stuck_since=iso(-400))
    assert st.recheck_after(observed(overdue, stuck_timeout_seconds=300), None, 10) == 1
    created = at.AttemptState("queued", "Created", "the training Job was created")
    assert st.recheck_after(observed(created), iso(-4), 10) == 6.5
    assert st.recheck_after(observed(created), iso(-60), 10) == st.EVENTS_RECHECK_SECONDS
    pending = at.AttemptState("queued", "PodPending", "the training pod is starting")
    assert st.recheck_after(observed(pending), iso(-60), 10) == st.SAFETY_RECHECK_SECONDS


def test_a_pod_lost_from_a_gang_explains_its_peers_failures_and_the_attempt_resumes() -> None:
    """Two pods of one attempt: one preempted (it saved and exited 75), the other failed
    after it (a replacement found the rendezvous closed, exit 1). The attempt is resumed,
    not failed for the consequence. One pod at a time (a retried pod), the newest says."""
    preempted = pod("Failed", terminated={"exitCode": 75, "message": json.dumps(
        {"outcome": "Preempted", "reason": "Preempted", "message": "SIGTERM", "exitCode": 75})})  # fmt: skip
    preempted["metadata"]["creationTimestamp"] = iso(-90)
    closed = pod("Failed", terminated={"exitCode": 1, "reason": "Error", "message": "closed"})
    closed["metadata"]["creationTimestamp"] = iso(-10)
    gang = k8s_job(("Failed", "BackoffLimitExceeded"))
    gang["spec"]["parallelism"] = 2
    state = at.observe_attempt(gang, [preempted, closed])
    assert (state.state, state.reason, state.retryable) == ("failed", "Preempted", True)
    out = st.compute(observed(state))
    assert out.start_next_attempt and out.phase == "Queued"

    alone = at.observe_attempt(k8s_job(("Failed", "BackoffLimitExceeded")), [preempted, closed])
    assert (alone.reason, alone.retryable) == ("Error", False)
