"""Observed children -> the job's status, and what the reconcile should do next (pure).

Status is derived from what is observed: the attempt's batch/v1 Job, its pods (container
states, exit codes, the trainer's termination message), the trainer's JSON progress lines
read from the pod log, and the serving Deployment. Nothing here calls the API; the handlers
collect an :class:`Observed` and apply the :class:`Outcome`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from snowtrain.api.status import ConditionType as C
from snowtrain.api.status import FailureReason as R
from snowtrain.api.status import Phase

TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})

#: Trainer exit codes (sysexits, contracts §2) -> failure reason.
EXIT_REASONS: dict[int, str] = {
    64: R.INVALID_SPEC,
    65: R.DATA_ERROR,
    69: R.UNAVAILABLE,
    75: R.PREEMPTED,
}
#: Reasons after which a new attempt resumes from the last checkpoint.
RETRYABLE = frozenset({R.PREEMPTED, R.EVICTED})
IMAGE_PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
CONFIG_WAITING = frozenset({"CreateContainerConfigError", "CreateContainerError"})
#: status.data, as the trainer's `data` event and termination message name the fields.
DATA_KEYS = ("rows", "validationRows", "queryId", "fingerprint")


def now_iso(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- the trainer's output -----------------------------------------------------------------


@dataclass
class TrainerReport:
    """The newest trainer event of each kind found in a log tail (contracts §2)."""

    start: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    done: dict[str, Any] | None = None


def parse_trainer_lines(text: str) -> TrainerReport:
    """Pick the trainer's JSON events out of log text; other lines are ordinary log text."""
    report = TrainerReport()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and hasattr(report, str(event.get("event"))):
            setattr(report, event["event"], event)
    return report


def parse_termination_message(text: str | None) -> dict[str, Any] | None:
    """The trainer's final summary, or None when the message is not its JSON (e.g. the log
    tail kubelet falls back to on an error, or a crash before the trainer ran)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "outcome" in value else None


# --- one attempt ------------------------------------------------------------------------------


@dataclass
class AttemptState:
    """What one attempt's Job and pods say."""

    state: str
    """queued | running | succeeded | failed | suspended | gone"""
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    termination: dict[str, Any] | None = None
    stuck_since: str | None = None
    """When a Pending problem (Unschedulable, image pull) began; it fails after a timeout."""
    start_time: str | None = None
    completion_time: str | None = None
    active: bool = False
    """The Job still has running or pending pods."""

    @property
    def retryable(self) -> bool:
        return self.state == "failed" and self.reason in RETRYABLE


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def _trainer_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == "trainer":
            return cs
    return statuses[0] if statuses else {}


def _creation(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("creationTimestamp") or ""


def classify_pod_failure(pod: dict[str, Any]) -> tuple[str, str, int | None, dict | None] | None:
    """(reason, message, exit code, termination) of a failed or disrupted pod; None if the
    pod did not fail."""
    status = pod.get("status") or {}
    pod_reason = status.get("reason") or ""
    if pod_reason == "Evicted":
        return R.EVICTED, status.get("message") or "the pod was evicted", None, None
    if pod_reason == "Preempting" or _condition(pod, "DisruptionTarget"):
        msg = status.get("message") or "the pod was preempted by a higher-priority pod"
        return R.PREEMPTED, msg, None, None
    terminated = (_trainer_status(pod).get("state") or {}).get("terminated")
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    code = terminated.get("exitCode")
    summary = parse_termination_message(terminated.get("message"))
    if terminated.get("reason") == "OOMKilled":
        return (
            R.OOM_KILLED,
            "the trainer exceeded its memory limit and was killed (exit 137); raise "
            "spec.resources.memory or lower spec.training.batchSize / maxSeqLength",
            code,
            summary,
        )
    if summary and summary.get("reason"):
        reason = summary["reason"]
        message = summary.get("message") or f"the trainer failed with {reason}"
        return reason, message, code, summary
    if code in EXIT_REASONS:
        tail = (terminated.get("message") or "").strip()[-1000:]
        return EXIT_REASONS[code], tail or f"the trainer exited with code {code}", code, None
    tail = (terminated.get("message") or "").strip()[-1000:]
    msg = f"the trainer exited with code {code}" + (f": {tail}" if tail else "")
    return R.ERROR, msg, code, summary


def _pending_problem(pod: dict[str, Any]) -> tuple[str, str, str | None, bool] | None:
    """(reason, message, since, fatal) for a pod stuck before running."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return (
                R.UNSCHEDULABLE,
                cond.get("message") or "no node fits the pod",
                cond.get("lastTransitionTime") or _creation(pod),
                False,
            )
    waiting = (_trainer_status(pod).get("state") or {}).get("waiting") or {}
    wreason = waiting.get("reason") or ""
    if wreason in IMAGE_PULL_WAITING:
        message = f"{wreason}: {waiting.get('message') or 'cannot pull the trainer image'}"
        since = status.get("startTime") or _creation(pod)
        return R.IMAGE_PULL_ERROR, message, since, wreason == "InvalidImageName"
    if wreason in CONFIG_WAITING:
        message = f"{wreason}: {waiting.get('message') or 'cannot create the container'}"
        return R.INVALID_SPEC, message, status.get("startTime") or _creation(pod), False
    return None


def pod_create_problem(events: list[dict[str, Any]]) -> tuple[str, str, str | None, bool] | None:
    """(reason, message, since, fatal) from the Job controller's FailedCreate Events: its pods
    are refused before they exist (a ResourceQuota, Pod Security admission, a policy), so no
    pod status will ever say why. A quota may free up (wait, then fail); the rest will not."""
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    first = min(failed, key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")
    last = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    message = str(last.get("message") or "the Job cannot create its pod")
    since = first.get("firstTimestamp") or first.get("eventTime")
    if "exceeded quota" in message:
        return R.QUOTA_EXCEEDED, f"the training pod is refused: {message}", since, False
    if "PodSecurity" in message:
        return R.POD_SECURITY, f"the training pod is refused: {message}", since, True
    return R.FORBIDDEN, f"the training pod cannot be created: {message}", since, True


def observe_attempt(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    *,
    user_suspended: bool = False,
    job_events: list[dict[str, Any]] | None = None,
) -> AttemptState:
    """Classify one attempt from its batch/v1 Job, that Job's pods and, while it has none,
    the Job's Events (why the Job controller cannot create them)."""
    if job is None or (job.get("metadata") or {}).get("deletionTimestamp"):
        return AttemptState("gone")
    jstatus = job.get("status") or {}
    base = {
        "start_time": jstatus.get("startTime"),
        "completion_time": jstatus.get("completionTime"),
        "active": bool(jstatus.get("active")),
    }
    pods = sorted(pods, key=_creation)
    if _condition(job, "Complete"):
        summary = None
        for pod in reversed(pods):
            terminated = (_trainer_status(pod).get("state") or {}).get("terminated") or {}
            summary = parse_termination_message(terminated.get("message"))
            if summary:
                break
        return AttemptState("succeeded", termination=summary, exit_code=0, **base)
    failed = _condition(job, "Failed")
    if failed and failed.get("reason") == "DeadlineExceeded":
        message = (
            f"{failed.get('message') or 'the Job ran past its deadline'} "
            "(spec.activeDeadlineSeconds); the next attempt would resume from the last checkpoint"
        )
        completion = failed.get("lastTransitionTime")
        base["completion_time"] = base["completion_time"] or completion
        return AttemptState("failed", R.DEADLINE_EXCEEDED, message, **base)
    # The newest pod that failed explains the failure better than the Job's summary.
    pod_failure = None
    for pod in reversed(pods):
        pod_failure = classify_pod_failure(pod)
        if pod_failure:
            break
    if failed:
        base["completion_time"] = base["completion_time"] or failed.get("lastTransitionTime")
        if pod_failure:
            reason, message, code, summary = pod_failure
            return AttemptState("failed", reason, message, code, summary, **base)
        message = failed.get("message") or "the Job has reached the specified backoff limit"
        return AttemptState("failed", R.BACKOFF_LIMIT_EXCEEDED, message, **base)
    # Non-retryable trainer failures are final even while the Job would retry the pod.
    if pod_failure and pod_failure[0] in (R.DATA_ERROR, R.INVALID_SPEC, R.OOM_KILLED):
        reason, message, code, summary = pod_failure
        return AttemptState("failed", reason, message, code, summary, **base)
    if (job.get("spec") or {}).get("suspend"):
        if user_suspended:
            return AttemptState("suspended", "Suspended", "the job is suspended", **base)
        return AttemptState(
            "queued", "WaitingForAdmission", "the Job waits for admission (Kueue)", **base
        )
    for pod in reversed(pods):
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running" and (_trainer_status(pod).get("state") or {}).get("running"):
            return AttemptState("running", "Running", "the trainer is running", **base)
    for pod in reversed(pods):
        if (pod.get("status") or {}).get("phase") != "Pending":
            continue
        problem = _pending_problem(pod)
        if problem:
            reason, message, since, fatal = problem
            if fatal:
                return AttemptState("failed", reason, message, stuck_since=since, **base)
            return AttemptState("queued", reason, message, stuck_since=since, **base)
    if any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
        # The trainer exited 0; the Job controller marks the Job Complete a moment later.
        return AttemptState("running", "Running", "the trainer finished; completing", **base)
    if pod_failure:
        reason, message, code, summary = pod_failure
        message = f"{message}; the Job retries the pod (resuming from the last checkpoint)"
        return AttemptState("queued", reason, message, code, summary, **base)
    if any((p.get("status") or {}).get("phase") == "Pending" for p in pods):
        return AttemptState("queued", "PodPending", "the training pod is starting", **base)
    refused = pod_create_problem(job_events or []) if not pods else None
    if refused:
        reason, message, since, fatal = refused
        state = "failed" if fatal else "queued"
        return AttemptState(state, reason, message, stuck_since=since, **base)
    return AttemptState("queued", "Created", "the training Job was created", **base)


# --- the whole job ----------------------------------------------------------------------------


@dataclass
class Observed:
    """Everything a reconcile saw, gathered by the handler."""

    generation: int
    old_status: dict[str, Any] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    invalid: str | None = None
    """Validation message (InvalidSpec) when the spec does not validate."""
    unsupported: str | None = None
    """Why the cluster cannot run this spec (Unsupported)."""
    child_refused: tuple[str, str] | None = None
    """(reason, message) when a training child could not be created: the API server refused
    it (InvalidSpec, Forbidden) or another object holds its name (Conflict)."""
    serving_refused: tuple[str, str] | None = None
    """(reason, message) when the serving Deployment or Service cannot be made: another
    object (not this job's) holds its name (Conflict), or the API server refused it."""
    waits_for_base: bool = False
    """The job is a FineTuneJob with a pretrainJobRef."""
    base_waiting: str | None = None
    """Set while the referenced PretrainJob has not succeeded yet (what it is doing)."""
    base_failed: str | None = None
    """Set when the referenced PretrainJob failed or cannot be used."""
    suspend: bool = False
    """spec.suspend."""
    attempt: int = 0
    """The current attempt number (0: none started)."""
    job_name: str | None = None
    current: AttemptState | None = None
    first_start_time: str | None = None
    report: TrainerReport | None = None
    """Progress lines read this time (None: not read; the old values are kept)."""
    output_uri: str | None = None
    serving_wanted: bool = False
    serving_replicas: int = 1
    deployment: dict[str, Any] | None = None
    serving_names: tuple[str, str] | None = None
    endpoint: str | None = None
    stuck_timeout_seconds: float = 300.0
    max_attempts: int = 10


@dataclass
class Outcome:
    """The status to write and what the handler should do."""

    status: dict[str, Any]
    start_next_attempt: bool = False
    """Create attempt ``attempt + 1`` (a preempted attempt resumes from its checkpoint)."""
    stop_current: bool = False
    """The job is decided (failed); stop the Job from retrying pods."""
    deploy_serving: bool = False
    """Create or update the serving Deployment + Service."""

    @property
    def phase(self) -> str:
        return self.status.get("phase", "")


def _old_condition(old: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in old.get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def _cond(obs: Observed, ctype: str, ok: bool | None, reason: str, message: str) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    old = _old_condition(obs.old_status, ctype)
    keep = old is not None and old.get("status") == status and old.get("lastTransitionTime")
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:32000],
        "lastTransitionTime": old["lastTransitionTime"] if keep else now_iso(obs.now),
        "observedGeneration": obs.generation,
    }


def _stuck_too_long(obs: Observed, state: AttemptState) -> bool:
    since = _parse_time(state.stuck_since)
    return since is not None and (obs.now - since).total_seconds() > obs.stuck_timeout_seconds


def _progress_fields(obs: Observed, status: dict[str, Any], succeeded: bool) -> None:
    """progress / metrics / data / model: newest report, else the old values."""
    old = obs.old_status
    progress = dict(old.get("progress") or {})
    metrics = dict(old.get("metrics") or {})
    data = dict(old.get("data") or {})
    rep = obs.report
    if rep:
        if rep.start:
            progress.setdefault("totalSteps", rep.start.get("totalSteps"))
        if rep.progress:
            p = rep.progress
            progress.update(
                percent=p.get("percent"),
                step=p.get("step"),
                totalSteps=p.get("totalSteps"),
                epoch=p.get("epoch"),
                etaSeconds=p.get("etaSeconds"),
                updatedAt=p.get("time"),
            )
            metrics.update(
                trainLoss=p.get("loss"), tokensPerSecond=p.get("tokensPerSecond"), mfu=p.get("mfu")
            )
        if rep.eval:
            e = rep.eval
            metrics.update(
                evalLoss=e.get("evalLoss"),
                evalAccuracy=e.get("evalAccuracy"),
                evalMacroF1=e.get("evalMacroF1"),
                perplexity=e.get("perplexity"),
            )
        if rep.data:
            data.update({key: rep.data.get(key) for key in DATA_KEYS})
    summary = obs.current.termination if obs.current else None
    if summary:
        for key in (
            "trainLoss",
            "evalLoss",
            "evalAccuracy",
            "evalMacroF1",
            "perplexity",
            "tokensPerSecond",
            "tokensTrained",
            "mfu",
        ):
            if (summary.get("metrics") or {}).get(key) is not None:
                metrics[key] = summary["metrics"][key]
        for key in DATA_KEYS:
            if (summary.get("data") or {}).get(key) is not None:
                data[key] = summary["data"][key]
        if summary.get("step") is not None:
            progress["step"] = summary["step"]
        if summary.get("totalSteps") is not None:
            progress["totalSteps"] = summary["totalSteps"]
    if succeeded:
        progress.update(percent=100.0, etaSeconds=0)
        if progress.get("totalSteps") is not None:
            progress["step"] = progress["totalSteps"]
        model = (summary or {}).get("model") or {}
        status["model"] = {
            "uri": model.get("uri") or obs.output_uri,
            "format": model.get("format") or "safetensors",
            "stage": model.get("stage"),
        }
        status["model"] = {k: v for k, v in status["model"].items() if v is not None}
    for name, block in (("progress", progress), ("metrics", metrics), ("data", data)):
        block = {k: v for k, v in block.items() if v is not None}
        if block:
            status[name] = block


def _serving_status(obs: Observed, status: dict[str, Any]) -> tuple[bool, str, str]:
    """(ready, reason, message) of the serving rollout; fills status.serving."""
    dep = obs.deployment
    if not obs.output_uri:
        return (
            False,
            "NoModelVolume",
            "serving needs spec.output.volumeClaimName (the model must outlive the training pod)",
        )
    deployment, service = obs.serving_names or (None, None)
    ready = int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)
    status["serving"] = {
        "deployment": deployment,
        "service": service,
        "endpoint": obs.endpoint,
        "readyReplicas": ready,
    }
    if obs.serving_refused:
        return False, *obs.serving_refused
    if dep is None:
        return False, "Deploying", "creating the serving Deployment"
    dstatus = dep.get("status") or {}
    meta_gen = (dep.get("metadata") or {}).get("generation")
    rolled = (
        dstatus.get("observedGeneration") == meta_gen
        and int(dstatus.get("updatedReplicas") or 0) >= obs.serving_replicas
    )
    if obs.serving_replicas == 0:
        return False, "ScaledToZero", "spec.serving.replicas is 0"
    if ready >= obs.serving_replicas and rolled:
        return True, "Ready", f"{ready}/{obs.serving_replicas} serving pods ready at {obs.endpoint}"
    return False, "RollingOut", f"{ready}/{obs.serving_replicas} serving pods ready"


def compute(obs: Observed) -> Outcome:
    """The status of a job from what was observed, plus the next step to take."""
    old = obs.old_status
    old_phase = old.get("phase")
    status: dict[str, Any] = {"observedGeneration": obs.generation}
    cur = obs.current or AttemptState("gone")
    outcome = Outcome(status)

    # Decide phase, the reason behind it and a message.
    failure: tuple[str, str, int | None] | None = None
    if obs.invalid:
        phase, reason, message = Phase.FAILED, R.INVALID_SPEC, obs.invalid
        failure = (reason, message, None)
    elif old_phase in TERMINAL_PHASES and cur.state not in ("succeeded", "failed"):
        # Decided already; a later deletion of the Job (TTL, by hand) must not retrain.
        return _sticky(obs, outcome)
    elif obs.unsupported:
        phase, reason, message = Phase.FAILED, R.UNSUPPORTED, obs.unsupported
        failure = (reason, message, None)
    elif obs.child_refused:
        phase, (reason, message) = Phase.FAILED, obs.child_refused
        failure = (reason, message, None)
    elif obs.base_failed:
        phase, reason, message = Phase.FAILED, R.BASE_MODEL_FAILED, obs.base_failed
        failure = (reason, message, None)
    elif obs.base_waiting:
        phase, reason, message = Phase.WAITING, "WaitingForBaseModel", obs.base_waiting
    elif cur.state == "succeeded":
        phase, reason, message = Phase.SUCCEEDED, "Succeeded", "training finished"
    elif cur.state == "failed" and cur.retryable and obs.attempt < obs.max_attempts:
        phase, reason = Phase.QUEUED, cur.reason
        message = f"attempt {obs.attempt} ended ({cur.message}); starting attempt {obs.attempt + 1} from the last checkpoint"
        outcome.start_next_attempt = not obs.suspend
        if obs.suspend:
            phase, reason, message = Phase.SUSPENDED, "Suspended", "the job is suspended"
    elif cur.state == "failed":
        phase, reason, message = Phase.FAILED, cur.reason, cur.message
        if cur.retryable:
            message = f"{message} (gave up after {obs.attempt} attempts)"
        failure = (reason, message, cur.exit_code)
        outcome.stop_current = cur.active
    elif obs.suspend:
        phase, reason, message = Phase.SUSPENDED, "Suspended", "the job is suspended"
    elif cur.state == "gone" and obs.attempt > 0:
        # The attempt's Job was removed (a suspend without Job.spec.suspend): resume anew.
        phase, reason = Phase.QUEUED, "Resuming"
        message = f"starting attempt {obs.attempt + 1} from the last checkpoint"
        outcome.start_next_attempt = True
    elif cur.state == "gone":
        phase, reason, message = Phase.PENDING, "Creating", "creating the training Job"
    elif cur.state == "running":
        phase, reason, message = Phase.RUNNING, "Running", cur.message
    elif cur.state == "queued" and cur.stuck_since and _stuck_too_long(obs, cur):
        phase, reason = Phase.FAILED, cur.reason
        message = f"{cur.message} (for more than {int(obs.stuck_timeout_seconds)} s)"
        failure = (reason, message, None)
        outcome.stop_current = cur.active
    else:  # queued, or suspended by Kueue
        phase, reason, message = Phase.QUEUED, cur.reason or "Queued", cur.message or "queued"
    status["phase"] = str(phase)

    succeeded = phase == Phase.SUCCEEDED
    _progress_fields(obs, status, succeeded)
    if failure:
        status["failure"] = {
            k: v
            for k, v in {
                "reason": failure[0],
                "message": failure[1],
                "exitCode": failure[2],
            }.items()
            if v is not None
        }
    _job_block(obs, status, cur)

    conditions = [
        _cond(obs, C.RUNNING, phase == Phase.RUNNING, str(reason), message),
        _cond(
            obs,
            C.SUCCEEDED,
            succeeded,
            "Succeeded" if succeeded else str(reason),
            message if succeeded else "training has not finished",
        ),
        _cond(
            obs, C.FAILED, phase == Phase.FAILED, str(reason), message if failure else "no failure"
        ),
        _cond(
            obs,
            C.SUSPENDED,
            phase == Phase.SUSPENDED,
            "Suspended" if phase == Phase.SUSPENDED else "NotSuspended",
            message if phase == Phase.SUSPENDED else "the job is not suspended",
        ),
    ]
    if obs.waits_for_base:
        waiting = phase == Phase.WAITING
        conditions.append(
            _cond(
                obs,
                C.WAITING,
                waiting,
                "WaitingForBaseModel" if waiting else "BaseModelReady",
                message if waiting else "the referenced PretrainJob's model is used",
            )
        )
    ready, ready_reason, ready_message = succeeded, str(reason), message
    if obs.serving_wanted and succeeded:
        outcome.deploy_serving = bool(obs.output_uri)
        s_ready, s_reason, s_message = _serving_status(obs, status)
        conditions.append(_cond(obs, C.SERVING_READY, s_ready, s_reason, s_message))
        ready, ready_reason, ready_message = s_ready, s_reason, s_message
    elif obs.serving_wanted:
        conditions.append(
            _cond(
                obs,
                C.SERVING_READY,
                False,
                "TrainingNotSucceeded",
                "serving starts after training succeeds",
            )
        )
    conditions.insert(0, _cond(obs, C.READY, ready, ready_reason, ready_message))
    status["conditions"] = conditions
    return outcome


def _job_block(obs: Observed, status: dict[str, Any], cur: AttemptState) -> None:
    old_job = obs.old_status.get("job") or {}
    block = {
        "name": obs.job_name or old_job.get("name"),
        "attempts": obs.attempt or None,
        "startTime": obs.first_start_time or old_job.get("startTime") or cur.start_time,
        "completionTime": cur.completion_time
        if cur.state in ("succeeded", "failed")
        else old_job.get("completionTime")
        if status.get("phase") in TERMINAL_PHASES
        else None,
    }
    if status.get("phase") == Phase.FAILED and not block["completionTime"]:
        block["completionTime"] = now_iso(obs.now)
    block = {k: v for k, v in block.items() if v is not None}
    if block:
        status["job"] = block


def _sticky(obs: Observed, outcome: Outcome) -> Outcome:
    """Keep a decided status; only serving (for a success) is still reconciled."""
    old = obs.old_status
    status = {k: v for k, v in old.items() if k != "conditions"}
    status["observedGeneration"] = obs.generation
    conditions = [c for c in old.get("conditions") or [] if c.get("type") != C.SERVING_READY]
    if old.get("phase") == Phase.SUCCEEDED:
        if obs.serving_wanted:
            outcome.deploy_serving = bool(obs.output_uri)
            s_ready, s_reason, s_message = _serving_status(obs, status)
            conditions.append(_cond(obs, C.SERVING_READY, s_ready, s_reason, s_message))
            conditions = [c for c in conditions if c.get("type") != C.READY]
            conditions.insert(0, _cond(obs, C.READY, s_ready, s_reason, s_message))
        else:
            status.pop("serving", None)
            conditions = [c for c in conditions if c.get("type") != C.READY]
            conditions.insert(0, _cond(obs, C.READY, True, "Succeeded", "training finished"))
    status["conditions"] = [{**c, "observedGeneration": obs.generation} for c in conditions]
    outcome.status = status
    return outcome
