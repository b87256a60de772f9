"""Observed children -> the job's status, and what the reconcile should do next (pure).

Status is derived from what is observed: the attempt's state (:mod:`.attempts`), the
trainer's newest events (:mod:`.trainer_log`) and the serving Deployment. Nothing here calls
the API; the reconcile collects an :class:`Observed` and applies the :class:`Outcome`, whose
status is a typed :class:`~snowtrain.api.status.JobStatusBlock` (the CRD's status schema is
generated from the same model) written with one serializer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from snowtrain.api.events import now_iso
from snowtrain.api.promotion import PromotionSpec, verdict
from snowtrain.api.status import (
    Condition,
    DataStatus,
    FailureStatus,
    JobStatus,
    JobStatusBlock,
    MetricsStatus,
    ModelStatus,
    Phase,
    ProgressStatus,
    PromotionStatus,
    ServingStatus,
    StatusModel,
)
from snowtrain.api.status import ConditionType as C
from snowtrain.api.status import FailureReason as R

from .attempts import AttemptState
from .trainer_log import TrainerReport

TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})

M = TypeVar("M", bound=StatusModel)


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time as Kubernetes writes it; None for none or a malformed one."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _read(model: type[M], value: Any) -> M:
    """A part of the status read back from the API server; one that does not validate (a
    hand-edited status) reads as empty rather than stopping the reconcile."""
    try:
        return model.model_validate(value or {})
    except ValidationError:
        return model()


def _or_none(model: M) -> M | None:
    """None for a block with nothing in it (left out of the status)."""
    return model if model.to_wire() else None


@dataclass
class Observed:
    """Everything a reconcile saw, gathered by the handler."""

    generation: int
    old_status: dict[str, Any] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    invalid: str | None = None
    """Validation message (InvalidSpec) when the spec does not validate."""
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
    promotion: PromotionSpec | None = None
    """spec.promotion: the model is served only if it clears this gate."""
    serving_replicas: int = 1
    deployment: dict[str, Any] | None = None
    serving_crash: str | None = None
    """Why a serving pod's server exited, while the Deployment is short of ready pods."""
    serving_names: tuple[str, str] | None = None
    endpoint: str | None = None
    stuck_timeout_seconds: float = 300.0
    max_attempts: int = 10

    @property
    def serving_pending(self) -> bool:
        """A serving Deployment exists and is short of ready pods on its current spec."""
        return self.deployment is not None and serving_short(self.deployment, self.serving_replicas)

    @cached_property
    def old_block(self) -> JobStatusBlock:
        """The status as last written, typed (read once per reconcile)."""
        return _read(JobStatusBlock, self.old_status)


@dataclass
class Outcome:
    """The status to write and what the handler should do."""

    block: JobStatusBlock
    start_next_attempt: bool = False
    """Create attempt ``attempt + 1`` (a preempted attempt resumes from its checkpoint)."""
    stop_current: bool = False
    """The job is decided (failed); stop the Job from retrying pods."""
    deploy_serving: bool = False
    """Create or update the serving Deployment + Service."""

    @property
    def status(self) -> dict[str, Any]:
        """The status as the API stores it (camelCase, unset fields left out)."""
        return self.block.to_wire()

    @property
    def phase(self) -> str:
        return self.block.phase or ""


def _cond(obs: Observed, ctype: str, ok: bool | None, reason: str, message: str) -> Condition:
    return condition(obs.old_block.conditions, obs.now, obs.generation, ctype, ok, reason, message)


def condition(
    old_conditions: list[Condition],
    now: datetime,
    generation: int,
    ctype: str,
    ok: bool | None,
    reason: str,
    message: str,
) -> Condition:
    """A condition; its lastTransitionTime moves only when its status changes."""
    status: Literal["True", "False", "Unknown"] = (
        "Unknown" if ok is None else ("True" if ok else "False")
    )
    old = next((c for c in old_conditions if c.type == ctype), None)
    keep = old is not None and old.status == status and old.last_transition_time
    return Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message[:32000],
        last_transition_time=old.last_transition_time if keep and old else now_iso(now),
        observed_generation=generation,
    )


EVENTS_RECHECK_SECONDS = 30.0
"""A Job without pods: how often to look for the Events that explain it (no watch here)."""
SAFETY_RECHECK_SECONDS = 300.0
"""The longest a job not running waits for a look without a watch event (a missed event)."""


def recheck_after(obs: Observed, job_created: str | None, no_pod_grace_seconds: float) -> float:
    """Seconds until looking again could change the status of a job that is not running,
    with no watch event in between (``job_created``: the current attempt's Job's
    creationTimestamp).

    A pod stuck (unschedulable, image pull, quota) turns Failed when its stuck time passes
    the timeout: look just after that. A Job without pods is explained by Events, which no
    watch here reports: look after the grace, then every EVENTS_RECHECK_SECONDS. Anything
    else changes only with a watch event (the pod, the Job, the referenced PretrainJob), so
    the look is a safety net. Without this, every queued job was looked at every 30 s
    however long it waited, work that grew with the number of jobs waiting. A serving
    Deployment short of ready pods is looked at every EVENTS_RECHECK_SECONDS too: a server
    that exits changes its pods, not the Deployment, and the status should say so.
    """
    cur = obs.current
    since = parse_time(cur.stuck_since) if cur is not None else None
    if cur is not None and cur.state == "queued" and since is not None:
        left = obs.stuck_timeout_seconds - (obs.now - since).total_seconds()
        return min(SAFETY_RECHECK_SECONDS, max(1.0, left + 1.0))
    if cur is not None and cur.state == "queued" and cur.reason == "Created":
        created = parse_time(job_created)
        age = (obs.now - created).total_seconds() if created is not None else 0.0
        if age < no_pod_grace_seconds:
            return no_pod_grace_seconds - age + 0.5
        return EVENTS_RECHECK_SECONDS
    if obs.serving_pending:
        return EVENTS_RECHECK_SECONDS
    return SAFETY_RECHECK_SECONDS


def _stuck_too_long(obs: Observed, state: AttemptState) -> bool:
    since = parse_time(state.stuck_since)
    return since is not None and (obs.now - since).total_seconds() > obs.stuck_timeout_seconds


def _progress_fields(obs: Observed, block: JobStatusBlock, succeeded: bool) -> None:
    """progress / metrics / data / model: the newest report over the old values (a field
    the newest event leaves unset is cleared, as that event says it no longer applies)."""
    old = obs.old_status
    progress = _read(ProgressStatus, old.get("progress"))
    metrics = _read(MetricsStatus, old.get("metrics"))
    data = _read(DataStatus, old.get("data"))
    rep = obs.report
    if rep:
        if rep.start and progress.total_steps is None:
            progress.total_steps = rep.start.total_steps
        if rep.progress:
            p = rep.progress
            progress = ProgressStatus(
                percent=p.percent,
                step=p.step,
                total_steps=p.total_steps,
                epoch=p.epoch,
                eta_seconds=p.eta_seconds,
                updated_at=p.time,
            )
            metrics.train_loss = p.loss
            metrics.tokens_per_second = p.tokens_per_second
            metrics.mfu = p.mfu
        if rep.eval:
            e = rep.eval
            metrics.eval_loss = e.eval_loss
            metrics.eval_accuracy = e.eval_accuracy
            metrics.eval_macro_f1 = e.eval_macro_f1
            metrics.perplexity = e.perplexity
        if rep.data:
            data = DataStatus.model_validate(
                rep.data.model_dump(include=set(DataStatus.model_fields))
            )
    summary = obs.current.termination if obs.current else None
    if summary:
        # The final word: every metric and lineage field the status declares, where set.
        for name in MetricsStatus.model_fields:
            if (value := getattr(summary.metrics, name)) is not None:
                setattr(metrics, name, value)
        for name in DataStatus.model_fields:
            if summary.data is not None and (value := getattr(summary.data, name)) is not None:
                setattr(data, name, value)
        progress.step = summary.step if summary.step is not None else progress.step
        if summary.total_steps is not None:
            progress.total_steps = summary.total_steps
    if succeeded:
        progress.percent, progress.eta_seconds = 100.0, 0
        if progress.total_steps is not None:
            progress.step = progress.total_steps
        model = summary.model if summary else None
        block.model = ModelStatus(
            uri=(model.uri if model else None) or obs.output_uri,
            format=(model.format if model else None) or "safetensors",
            stage=model.stage if model else None,
        )
    block.progress = _or_none(progress)
    block.metrics = _or_none(metrics)
    block.data = _or_none(data)


def _serving_status(obs: Observed, block: JobStatusBlock) -> tuple[bool, str, str]:
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
    block.serving = ServingStatus(
        deployment=deployment, service=service, endpoint=obs.endpoint, ready_replicas=ready
    )
    if obs.serving_refused:
        return False, *obs.serving_refused
    if dep is None:
        return False, "Deploying", "creating the serving Deployment"
    if obs.serving_replicas == 0:
        return False, "ScaledToZero", "spec.serving.replicas is 0"
    if not serving_short(dep, obs.serving_replicas):
        return True, "Ready", f"{ready}/{obs.serving_replicas} serving pods ready at {obs.endpoint}"
    if obs.serving_crash:
        return False, "ServerFailing", f"{ready}/{obs.serving_replicas} serving pods ready; {obs.serving_crash}"  # fmt: skip
    return False, "RollingOut", f"{ready}/{obs.serving_replicas} serving pods ready"


def serving_short(dep: dict[str, Any], replicas: int) -> bool:
    """Whether the Deployment is not yet all ready on its current spec (rolled out)."""
    dstatus = dep.get("status") or {}
    rolled = (
        dstatus.get("observedGeneration") == (dep.get("metadata") or {}).get("generation")
        and int(dstatus.get("updatedReplicas") or 0) >= replicas
    )
    return not (rolled and int(dstatus.get("readyReplicas") or 0) >= replicas)


def compute(obs: Observed) -> Outcome:
    """The status of a job from what was observed, plus the next step to take."""
    old = obs.old_status
    old_phase = old.get("phase")
    block = JobStatusBlock(observed_generation=obs.generation)
    cur = obs.current or AttemptState("gone")
    outcome = Outcome(block)

    # Decide phase, the reason behind it and a message.
    reason: str  # a FailureReason, or another reason (Running, Suspended, WaitingForBaseModel...)
    failure: FailureStatus | None = None
    if obs.invalid:
        phase, reason, message = Phase.FAILED, R.INVALID_SPEC, obs.invalid
        failure = FailureStatus(reason=reason, message=message)
    elif old_phase in TERMINAL_PHASES and cur.state not in ("succeeded", "failed"):
        # Decided already; a later deletion of the Job (TTL, by hand) must not retrain.
        return _sticky(obs, outcome)
    elif obs.child_refused:
        phase, (reason, message) = Phase.FAILED, obs.child_refused
        failure = FailureStatus(reason=reason, message=message)
    elif obs.base_failed:
        phase, reason, message = Phase.FAILED, R.BASE_MODEL_FAILED, obs.base_failed
        failure = FailureStatus(reason=reason, message=message)
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
        failure = FailureStatus(reason=reason, message=message, exit_code=cur.exit_code)
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
        failure = FailureStatus(reason=reason, message=message)
        outcome.stop_current = cur.active
    else:  # queued, or suspended by Kueue
        phase, reason, message = Phase.QUEUED, cur.reason or "Queued", cur.message or "queued"
    block.phase = str(phase)

    succeeded = phase == Phase.SUCCEEDED
    _progress_fields(obs, block, succeeded)
    block.failure = failure
    block.job = _job_block(obs, block, cur)

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
    promoted = True
    if obs.promotion is not None and succeeded:
        block.promotion = _gate(obs, block)
        promoted = bool(block.promotion.promoted)
        conditions.append(_promoted_condition(obs, block.promotion))
        if not promoted:
            ready_message = f"training finished; not served: {block.promotion.message}"
    if obs.serving_wanted and succeeded and not promoted:
        conditions.append(_not_promoted_serving(obs, block))
    elif obs.serving_wanted and succeeded:
        outcome.deploy_serving = bool(obs.output_uri)
        s_ready, s_reason, s_message = _serving_status(obs, block)
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
    block.conditions = conditions
    return outcome


def _gate(obs: Observed, block: JobStatusBlock) -> PromotionStatus:
    """The evaluation gate's verdict, from the trainer's final summary (its metrics and the
    champion's on the same rows); once decided it stays, as the summary may be gone."""
    assert obs.promotion is not None
    old = obs.old_block.promotion
    summary = obs.current.termination if obs.current else None
    if summary is None and old is not None and old.promoted is not None:
        return old
    metrics = (block.metrics or MetricsStatus()).to_wire()
    return verdict(obs.promotion, metrics, summary.champion if summary else None)


def _promoted_condition(obs: Observed, gate: PromotionStatus) -> Condition:
    return _cond(obs, C.PROMOTED, gate.promoted, gate.reason or "", gate.message or "")


def _not_promoted_serving(obs: Observed, block: JobStatusBlock) -> Condition:
    """ServingReady=False for a model the gate kept out of service (nothing is deployed)."""
    block.serving = None
    gate = block.promotion
    message = f"not served: {gate.message}" if gate else "not served"
    return _cond(obs, C.SERVING_READY, False, (gate.reason if gate else None) or "", message)


def _job_block(obs: Observed, block: JobStatusBlock, cur: AttemptState) -> JobStatus | None:
    old_job = _read(JobStatus, obs.old_status.get("job"))
    terminal = block.phase in TERMINAL_PHASES
    job = JobStatus(
        name=obs.job_name or old_job.name,
        attempts=obs.attempt or None,
        start_time=obs.first_start_time or old_job.start_time or cur.start_time,
        completion_time=cur.completion_time
        if cur.state in ("succeeded", "failed")
        else old_job.completion_time
        if terminal
        else None,
    )
    if block.phase == Phase.FAILED and not job.completion_time:
        job.completion_time = now_iso(obs.now)
    return _or_none(job)


def _sticky(obs: Observed, outcome: Outcome) -> Outcome:
    """Keep a decided status; only serving (for a success) is still reconciled."""
    block = obs.old_block.model_copy(deep=True)
    block.observed_generation = obs.generation
    conditions = [c for c in block.conditions if c.type != C.SERVING_READY]
    if block.phase == Phase.SUCCEEDED:
        conditions = [c for c in conditions if c.type not in (C.READY, C.PROMOTED)]
        promoted = True
        if obs.promotion is not None:
            block.promotion = _gate(obs, block)
            promoted = bool(block.promotion.promoted)
            conditions.append(_promoted_condition(obs, block.promotion))
        if obs.serving_wanted and not promoted:
            conditions.append(_not_promoted_serving(obs, block))
            message = f"training finished; not served: {block.promotion.message}"  # type: ignore[union-attr]
            conditions.insert(0, _cond(obs, C.READY, True, "Succeeded", message))
        elif obs.serving_wanted:
            outcome.deploy_serving = bool(obs.output_uri)
            s_ready, s_reason, s_message = _serving_status(obs, block)
            conditions.append(_cond(obs, C.SERVING_READY, s_ready, s_reason, s_message))
            conditions.insert(0, _cond(obs, C.READY, s_ready, s_reason, s_message))
        else:
            block.serving = None
            conditions.insert(0, _cond(obs, C.READY, True, "Succeeded", "training finished"))
    for cond in conditions:
        cond.observed_generation = obs.generation
    block.conditions = conditions
    outcome.block = block
    return outcome
