"""The status both kinds report: what kubectl, Argo CD, Helm and Kueue read.

Status is always derived from what the operator observes (Job, pods, the trainer's progress
lines and termination message), never from memory of what it did. Conditions follow the
Kubernetes convention so ``kubectl wait --for=condition=Succeeded`` and kstatus ``Ready`` work.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from .base import ApiModel


class Phase(StrEnum):
    """One-word summary of where a job is (printer column)."""

    PENDING = "Pending"
    WAITING = "Waiting"  # for a referenced PretrainJob
    QUEUED = "Queued"  # created but not admitted / not scheduled yet
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ConditionType(StrEnum):
    READY = "Ready"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    SERVING_READY = "ServingReady"
    WAITING = "WaitingForBaseModel"
    PROMOTED = "Promoted"


class FailureReason(StrEnum):
    """Why a job failed: classified so people and automation can act on it."""

    INVALID_SPEC = "InvalidSpec"
    DATA_ERROR = "DataError"
    UNAVAILABLE = "Unavailable"
    IMAGE_PULL_ERROR = "ImagePullError"
    OOM_KILLED = "OOMKilled"
    UNSCHEDULABLE = "Unschedulable"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    PREEMPTED = "Preempted"
    EVICTED = "Evicted"
    BASE_MODEL_FAILED = "BaseModelFailed"
    CONFLICT = "Conflict"
    FORBIDDEN = "Forbidden"
    QUOTA_EXCEEDED = "QuotaExceeded"
    POD_SECURITY = "PodSecurity"
    INTERNAL_ERROR = "InternalError"
    ERROR = "Error"


class StatusModel(ApiModel):
    """A part of the status. Read back from the API server on every reconcile, where an
    operator of another version may have written fields this one does not know: those are
    ignored on reading (and dropped on the next write), never an error."""

    model_config = ApiModel.model_config | {"extra": "ignore"}


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: str
    """Condition type (Ready, Running, Succeeded, Failed, Suspended, ServingReady, ...)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = Field(default="", max_length=1024)
    """CamelCase machine-readable reason."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The spec generation this condition describes."""


class ProgressStatus(StatusModel):
    """Training progress, refreshed from the trainer's progress lines."""

    percent: float | None = None
    """0-100."""
    step: int | None = None
    """Optimizer steps done."""
    total_steps: int | None = None
    """Optimizer steps planned."""
    epoch: float | None = None
    """Epochs done (fractional)."""
    eta_seconds: float | None = None
    """Estimated seconds to completion."""
    updated_at: str | None = None
    """When the trainer last reported (RFC 3339)."""


class MetricsStatus(StatusModel):
    """Latest training metrics."""

    train_loss: float | None = None
    """Training loss (running mean over the last report interval)."""
    eval_loss: float | None = None
    """Validation loss."""
    eval_accuracy: float | None = None
    """Validation accuracy (classification)."""
    eval_macro_f1: float | None = None
    """Validation macro-F1 (classification)."""
    perplexity: float | None = None
    """Validation perplexity (language models)."""
    tokens_per_second: float | None = None
    """Training throughput."""
    mfu: float | None = None
    """Model FLOPs utilisation per GPU, from 0 to 1 (pretraining on a GPU whose peak is known)."""
    tokens_trained: int | None = None
    """Tokens consumed so far."""


class DataStatus(StatusModel):
    """Lineage of the data that was read."""

    rows: int | None = None
    """Training rows."""
    validation_rows: int | None = None
    """Validation rows."""
    query_id: str | None = None
    """Snowflake query id of the read (find it in QUERY_HISTORY)."""
    fingerprint: str | None = None
    """Content hash of the rows read (sha256)."""


class ModelStatus(StatusModel):
    """Where the trained model is."""

    uri: str | None = None
    """pvc://CLAIM/PATH (or a local path in local mode)."""
    format: str | None = None
    """safetensors."""
    stage: str | None = None
    """Snowflake stage it was uploaded to, if any."""


class FailureStatus(StatusModel):
    """Why the job failed, when it did."""

    reason: str | None = None
    """Classified reason (InvalidSpec, DataError, OOMKilled, Unschedulable, ...)."""
    message: str | None = None
    """What happened and what to do about it."""
    exit_code: int | None = None
    """Trainer exit code, when it exited."""


class JobStatus(StatusModel):
    """The batch/v1 Job of the current attempt."""

    name: str | None = None
    """Job name."""
    attempts: int | None = None
    """Attempts started so far (a preempted attempt resumes from its checkpoint)."""
    start_time: str | None = None
    """When training first started (RFC 3339)."""
    completion_time: str | None = None
    """When training ended (RFC 3339)."""


class ServingStatus(StatusModel):
    """The inference Deployment + Service."""

    deployment: str | None = None
    """Deployment name."""
    service: str | None = None
    """Service name."""
    endpoint: str | None = None
    """In-cluster base URL of the model API."""
    ready_replicas: int | None = None
    """Serving pods ready."""


class PromotionStatus(StatusModel):
    """What the evaluation gate decided, with the numbers it compared."""

    promoted: bool | None = None
    """Whether the model cleared the gate (and is served)."""
    reason: str | None = None
    """GatePassed, GateFailed or NotEvaluated."""
    message: str | None = None
    """The comparison, in words, with both numbers."""
    metric: str | None = None
    """The metric the gate compares."""
    value: float | None = None
    """This run's model on the validation rows."""
    threshold: float | None = None
    """The absolute bar."""
    champion_model: str | None = None
    """The model compared with."""
    champion_value: float | None = None
    """The champion on the same validation rows, in the same run."""
    max_regression: float | None = None
    """How much worse than the champion was allowed."""


class JobStatusBlock(StatusModel):
    """Status of a FineTuneJob or PretrainJob."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    phase: str | None = None
    """Pending, Waiting, Queued, Running, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Running, Succeeded, Failed, Suspended, ServingReady, WaitingForBaseModel."""
    progress: ProgressStatus | None = None
    """Training progress."""
    metrics: MetricsStatus | None = None
    """Training metrics."""
    data: DataStatus | None = None
    """Data lineage."""
    model: ModelStatus | None = None
    """The trained model."""
    failure: FailureStatus | None = None
    """Why it failed."""
    job: JobStatus | None = None
    """The training Job."""
    serving: ServingStatus | None = None
    """The inference endpoint."""
    promotion: PromotionStatus | None = None
    """What the evaluation gate decided (jobs with spec.promotion)."""
