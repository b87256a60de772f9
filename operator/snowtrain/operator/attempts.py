"""One attempt's batch/v1 Job and pods -> what state the attempt is in, and why (pure).

The attempt is classified from the Job's conditions, its pods' phases and container states
(exit codes, the trainer's termination message, OOM kills, evictions, preemption), the
scheduler's conditions, and -- while the Job has no pod at all -- the Job controller's
FailedCreate Events. :mod:`.status` turns the result into the job's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from snowtrain.api.events import TrainerSummary, parse_summary, reason_of_exit
from snowtrain.api.status import FailureReason as R

#: Reasons after which a new attempt resumes from the last checkpoint.
RETRYABLE = frozenset({R.PREEMPTED, R.EVICTED})
IMAGE_PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
CONFIG_WAITING = frozenset({"CreateContainerConfigError", "CreateContainerError"})


@dataclass
class AttemptState:
    """What one attempt's Job and pods say."""

    state: str
    """queued | running | succeeded | failed | suspended | gone"""
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    termination: TrainerSummary | None = None
    stuck_since: str | None = None
    """When a Pending problem (Unschedulable, image pull) began; it fails after a timeout."""
    start_time: str | None = None
    completion_time: str | None = None
    active: bool = False
    """The Job still has running or pending pods."""

    @property
    def retryable(self) -> bool:
        return self.state == "failed" and self.reason in RETRYABLE


class _JobTimes(TypedDict):
    """The :class:`AttemptState` fields every state takes from the Job's status."""

    start_time: str | None
    completion_time: str | None
    active: bool


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    for cond in conditions:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def _trainer_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == "trainer":
            return cs
    return statuses[0] if statuses else {}


def _creation(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("creationTimestamp") or ""


def classify_pod_failure(
    pod: dict[str, Any],
) -> tuple[str, str, int | None, TrainerSummary | None] | None:
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
    summary = parse_summary(terminated.get("message"))
    if terminated.get("reason") == "OOMKilled":
        return (
            R.OOM_KILLED,
            "the trainer exceeded its memory limit and was killed (exit 137); raise "
            "spec.resources.memory or lower spec.training.batchSize / maxSeqLength",
            code,
            summary,
        )
    if summary and summary.reason:
        reason = summary.reason
        message = summary.message or f"the trainer failed with {reason}"
        return reason, message, code, summary
    known = reason_of_exit(code)
    if known is not None and known != R.INTERNAL_ERROR:
        tail = (terminated.get("message") or "").strip()[-1000:]
        return known, tail or f"the trainer exited with code {code}", code, None
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


def _explaining_failure(
    pods: list[dict[str, Any]], *, gang: bool
) -> tuple[str, str, int | None, TrainerSummary | None] | None:
    """The pod failure that explains the attempt better than the Job's summary: the newest
    one (a retried pod says what happened last). In a gang of several pods a preempted or
    evicted pod explains the others' failures (their peer vanished mid-collective, a
    replacement found the rendezvous closed), so it wins and the attempt is resumed."""
    failures = [f for f in map(classify_pod_failure, reversed(pods)) if f]
    if gang:
        lost = [f for f in failures if f[0] in RETRYABLE]
        failures = lost or failures
    return failures[0] if failures else None


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
    base: _JobTimes = {
        "start_time": jstatus.get("startTime"),
        "completion_time": jstatus.get("completionTime"),
        "active": bool(jstatus.get("active")),
    }
    pods = sorted(pods, key=_creation)
    if _condition(job, "Complete"):
        summary = None
        for pod in reversed(pods):
            terminated = (_trainer_status(pod).get("state") or {}).get("terminated") or {}
            summary = parse_summary(terminated.get("message"))
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
    pod_failure = _explaining_failure(
        pods, gang=int((job.get("spec") or {}).get("parallelism") or 1) > 1
    )
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
