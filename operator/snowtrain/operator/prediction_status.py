"""The status of a BatchPrediction, from what a reconcile observed (pure, like ``status.py``
is for the training kinds).

One Job runs the predictor; the Job controller replaces a lost pod (up to
``spec.backoffLimit``) and each new pod goes on from the rows committed before it, so there
are no attempts to count here: the phase follows the Job, the rows follow the predictor's
``rows`` lines, and a decided run stays decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from snowtrain.api.batch import (
    BatchPredictionStatus,
    PredictionModelStatus,
    PredictionOutputStatus,
    RowsStatus,
)
from snowtrain.api.events import PredictionCounts, now_iso
from snowtrain.api.status import ConditionType as C
from snowtrain.api.status import FailureReason as R
from snowtrain.api.status import FailureStatus, JobStatus, Phase

from .attempts import AttemptState
from .status import TERMINAL_PHASES, _read, condition, parse_time
from .trainer_log import TrainerReport

#: The condition a BatchPrediction waiting for its model's job shows.
WAITING_FOR_MODEL = "WaitingForModel"


@dataclass
class PredictionObserved:
    """What one reconcile of a BatchPrediction saw."""

    generation: int
    old_status: dict[str, Any]
    now: datetime
    stuck_timeout_seconds: float
    invalid: str | None = None
    """Why the spec cannot run (invalid, or not allowed here)."""
    refused: tuple[str, str] | None = None
    """(reason, message) of a child the API server refused."""
    model_waiting: str | None = None
    model_failed: str | None = None
    model: PredictionModelStatus | None = None
    output: PredictionOutputStatus | None = None
    job_name: str | None = None
    current: AttemptState | None = None
    report: TrainerReport | None = None
    waits_for_job: bool = False
    """The model comes from a training job (the WaitingForModel condition is shown)."""


@dataclass
class PredictionOutcome:
    status: BatchPredictionStatus
    stop_job: bool = False
    """The run is decided Failed while its Job still has pods: stop them."""

    @property
    def phase(self) -> str:
        return self.status.phase or ""


def _stuck_too_long(obs: PredictionObserved, state: AttemptState) -> bool:
    since = parse_time(state.stuck_since)
    return since is not None and (obs.now - since).total_seconds() > obs.stuck_timeout_seconds


def _rows(obs: PredictionObserved, old: RowsStatus, succeeded: bool) -> RowsStatus | None:
    """The newest row counts: the predictor's last ``rows`` line, its summary at the end."""
    rows = old.model_copy()
    report = obs.report
    event = report.rows if report is not None else None
    if event is not None:
        rows.done, rows.total = event.rows_done, event.rows_total
        rows.per_second, rows.eta_seconds = event.rows_per_second, event.eta_seconds
        if event.resumed_from_row is not None:
            rows.resumed_from = event.resumed_from_row
        rows.updated_at = event.time or now_iso(obs.now)
    cur = obs.current
    summary = cur.termination.predictions if cur is not None and cur.termination else None
    if summary is None and report is not None and report.done is not None:
        summary = report.done.predictions
    if summary is not None:
        _summary_rows(rows, summary)
    if succeeded:
        rows.eta_seconds = None
        if rows.total is not None:
            rows.done = rows.total
    if rows.total:
        rows.percent = round(100.0 * (rows.done or 0) / rows.total, 1)
    elif succeeded:
        rows.percent = 100.0
    return rows if rows.to_wire() else None


def _summary_rows(rows: RowsStatus, summary: PredictionCounts) -> None:
    if summary.rows_total is not None:
        rows.total = summary.rows_total
    if summary.rows_done is not None:
        rows.done = summary.rows_done
    if summary.failed_rows is not None:
        rows.failed = summary.failed_rows
    if summary.resumed_from_row is not None:
        rows.resumed_from = summary.resumed_from_row


def compute_prediction(obs: PredictionObserved) -> PredictionOutcome:
    """The status of a BatchPrediction from what was observed, and whether to stop its Job."""
    old = _read(BatchPredictionStatus, obs.old_status)
    old_phase = old.phase
    cur = obs.current or AttemptState("gone")
    status = BatchPredictionStatus(observed_generation=obs.generation)
    outcome = PredictionOutcome(status)
    failure: FailureStatus | None = None
    if obs.invalid:
        phase, reason, message = Phase.FAILED, str(R.INVALID_SPEC), obs.invalid
        failure = FailureStatus(reason=reason, message=message)
    elif old_phase in TERMINAL_PHASES and cur.state not in ("succeeded", "failed"):
        # Decided: a later deletion of the Job (TTL, by hand) must not predict again.
        status = old.model_copy(deep=True)
        status.observed_generation = obs.generation
        return PredictionOutcome(status)
    elif obs.refused:
        phase, (reason, message) = Phase.FAILED, obs.refused
        failure = FailureStatus(reason=reason, message=message)
    elif obs.model_failed:
        phase, reason, message = Phase.FAILED, str(R.BASE_MODEL_FAILED), obs.model_failed
        failure = FailureStatus(reason=reason, message=message)
    elif obs.model_waiting:
        phase, reason, message = Phase.WAITING, WAITING_FOR_MODEL, obs.model_waiting
    elif cur.state == "succeeded":
        phase, reason, message = Phase.SUCCEEDED, "Succeeded", "every row was predicted and written"
    elif cur.state == "failed":
        phase, reason, message = Phase.FAILED, cur.reason, cur.message
        failure = FailureStatus(reason=reason, message=message, exit_code=cur.exit_code)
        outcome.stop_job = cur.active
    elif cur.state == "gone":
        phase, reason, message = Phase.PENDING, "Creating", "creating the prediction Job"
    elif cur.state == "running":
        phase, reason, message = Phase.RUNNING, "Running", cur.message or "predicting"
    elif cur.state == "queued" and cur.stuck_since and _stuck_too_long(obs, cur):
        phase, reason = Phase.FAILED, cur.reason
        message = f"{cur.message} (for more than {int(obs.stuck_timeout_seconds)} s)"
        failure = FailureStatus(reason=reason, message=message)
        outcome.stop_job = cur.active
    else:
        phase, reason, message = Phase.QUEUED, cur.reason or "Queued", cur.message or "queued"
    succeeded = phase == Phase.SUCCEEDED
    status.phase = str(phase)
    status.failure = failure
    status.rows = _rows(obs, old.rows or RowsStatus(), succeeded)
    status.output = obs.output or old.output
    status.model = obs.model or old.model
    old_job = old.job or JobStatus()
    job = JobStatus(
        name=obs.job_name or old_job.name,
        start_time=old_job.start_time or cur.start_time,
        completion_time=cur.completion_time or old_job.completion_time,
    )
    if phase == Phase.FAILED and not job.completion_time:
        job.completion_time = now_iso(obs.now)
    status.job = job if job.to_wire() else None

    def cond(ctype: str, ok: bool, why: str, text: str) -> Any:
        return condition(old.conditions, obs.now, obs.generation, ctype, ok, why, text)

    conditions = [
        cond(C.READY, succeeded, reason, message),
        cond(C.RUNNING, phase == Phase.RUNNING, reason, message),
        cond(C.SUCCEEDED, succeeded, reason, message if succeeded else "the run has not finished"),
        cond(C.FAILED, phase == Phase.FAILED, reason, message if failure else "no failure"),
    ]
    if obs.waits_for_job:
        waiting = phase == Phase.WAITING
        conditions.append(
            cond(
                WAITING_FOR_MODEL,
                waiting,
                WAITING_FOR_MODEL if waiting else "ModelReady",
                message if waiting else "the referenced job's model is used",
            )
        )
    status.conditions = conditions
    return outcome
