"""TrainingSchedule (snowtrain.io/v1alpha1): retrain on a cron schedule, when the data changed,
and serve the best model through one stable endpoint.

Each tick creates an ordinary FineTuneJob or PretrainJob from ``jobTemplate`` (a *run*),
named from its scheduled time so that a second operator, or one restarted mid-tick, can only
ever create the same object once. With ``dataTrigger`` a tick first runs a small probe pod
that fingerprints the source (row count and the newest value of a column); a tick whose
fingerprint equals the last successful run's is skipped and recorded as such. A run whose
template has ``promotion`` is compared with the model in service on the same validation rows
(the trainer evaluates both); a promoted model goes live on the schedule's own endpoint.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

from pydantic import Field, field_validator

from .base import ApiModel, Float
from .events import now_iso
from .identifiers import COLUMN_PATTERN
from .kinds import API_VERSION, JobKind, Resource
from .spec import NAME_PATTERN, ServingSpec
from .status import Condition, ServingStatus, StatusModel

#: Longest schedule name: a run is ``<name>-<8 digits>`` and its children add up to 15
#: characters more, within Kubernetes' 63 for names that are also labels.
MAX_SCHEDULE_NAME: Final = 36


class DataTrigger(ApiModel):
    """Start a scheduled run only when the source data changed since the last successful run."""

    column: str | None = Field(default=None, pattern=COLUMN_PATTERN, max_length=255)
    """A column whose newest value (MAX) changes when rows arrive or change, e.g. a load
    timestamp or an increasing id. The fingerprint is the row count plus this value; without
    a column, only a changed row count counts as new data."""


class JobTemplateMetadata(ApiModel):
    """Labels and annotations every run gets (besides the schedule's own)."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of each run."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of each run."""


class JobTemplate(ApiModel):
    """The job each tick creates: a FineTuneJob or PretrainJob spec with its kind."""

    kind: JobKind
    """FineTuneJob or PretrainJob."""
    metadata: JobTemplateMetadata = Field(default_factory=JobTemplateMetadata)
    """Labels and annotations of each run."""
    spec: dict[str, Any]
    """The run's spec, exactly as that kind's spec (``kubectl explain finetunejob.spec``);
    checked at admission. Its serving block is ignored: the schedule serves (spec.serving).
    With spec.promotion, the schedule fills in championUri with the model it serves."""


class CanarySpec(ApiModel):
    """Roll a promoted model out to a share of the endpoint's pods first."""

    replicas: int = Field(default=1, ge=1, le=100)
    """Pods of the new model beside the ones in service, behind the same Service."""
    duration_seconds: int = Field(default=120, ge=0, le=86_400)
    """How long the canary must serve, all its pods ready and its error rate under the bar,
    before it takes over (counted from when the last of its pods got ready)."""
    ready_timeout_seconds: int = Field(default=600, ge=1, le=86_400)
    """A canary whose pods are not all ready this long after they were created is rolled
    back (a model that does not load never gets traffic: the Service sends only to ready
    pods). One whose server exits with an error is rolled back at once, with its last log
    line."""
    max_error_rate: Float = Field(default=0.05, ge=0.0, le=1.0)
    """Largest share of the canary's requests that may fail (5xx, from its /metrics)."""


class ScheduleServing(ServingSpec):
    """The schedule's stable endpoint: one Deployment and Service named after the schedule,
    serving the model in service whichever run trained it."""

    canary: CanarySpec | None = None
    """Promote through a canary; without it the Deployment rolls (surge, never below its
    ready replicas)."""


class TrainingScheduleSpec(ApiModel):
    """When to retrain, on what condition, and how the result goes live."""

    schedule: str = Field(min_length=1, max_length=128)
    """Cron expression (five fields, or @hourly, @daily, @weekly, @monthly, @yearly)."""
    time_zone: str | None = Field(default=None, max_length=64)
    """IANA time zone the schedule is read in (default UTC), e.g. Europe/Berlin."""
    suspend: bool = False
    """Start no more runs (a running one goes on)."""
    concurrency_policy: Literal["Forbid", "Replace"] = "Forbid"
    """A tick while a run is active: Forbid skips the tick, Replace deletes the active run
    and starts the new one."""
    starting_deadline_seconds: int | None = Field(default=None, ge=1)
    """A tick not started within this many seconds of its time (the operator was down) is
    recorded as missed instead of run late."""
    successful_runs_history_limit: int = Field(default=3, ge=1, le=100)
    """Succeeded runs to keep (the oldest are deleted with their models; the model in service
    and the previous one are always kept)."""
    failed_runs_history_limit: int = Field(default=1, ge=0, le=100)
    """Failed runs to keep."""
    data_trigger: DataTrigger | None = None
    """Run only when the source data changed since the last successful run."""
    job_template: JobTemplate
    """The job each tick creates."""
    serving: ScheduleServing | None = None
    """Serve the model in service through one stable Deployment and Service."""
    pinned_run: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=253)
    """Serve this run's model instead of the newest promoted one (a rollback by hand); unset
    to return to automatic promotion."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        text = value.strip()
        if not (text.startswith("@") or len(text.split()) == 5) or not croniter.is_valid(text):
            raise ValueError(
                f"{value!r} is not a cron schedule: five fields (minute hour day-of-month "
                "month day-of-week) or one of @hourly, @daily, @weekly, @monthly, @yearly"
            )
        return text

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name)") from None
        return value


class RunRecord(StatusModel):
    """One tick: the run it started, or why it started none."""

    name: str | None = None
    """The run (FineTuneJob or PretrainJob), when one was started."""
    scheduled_time: str | None = None
    """The tick (RFC 3339)."""
    phase: str | None = None
    """Skipped, Missed, Pending, Running, Succeeded or Failed."""
    reason: str | None = None
    """Why skipped (DataUnchanged, ConcurrencyForbid, ProbeFailed), or the run's outcome
    (GatePassed, GateFailed, a failure reason)."""
    message: str | None = None
    """Detail, in words."""
    data_fingerprint: str | None = None
    """The source's fingerprint at the tick (data trigger)."""
    data_rows: int | None = None
    """Source rows at the tick."""
    metric: str | None = None
    """The gate's metric."""
    value: float | None = None
    """The run's value of it."""
    champion_value: float | None = None
    """The model in service on the same rows."""
    promoted: bool | None = None
    """Whether the run's model went into service."""
    model: str | None = None
    """The run's model (pvc://...)."""


class ServedModel(StatusModel):
    """A model on the endpoint."""

    run: str | None = None
    """The run that trained it."""
    model: str | None = None
    """Its URI."""
    since: str | None = None
    """When it went into service (RFC 3339)."""


class CanaryStatus(StatusModel):
    """A rollout in progress."""

    run: str | None = None
    """The run whose model is on trial."""
    model: str | None = None
    """Its URI."""
    started: str | None = None
    """When the canary's pods were created (RFC 3339)."""
    ready_replicas: int | None = None
    """Canary pods ready."""
    requests: int | None = None
    """Requests the canary answered so far."""
    errors: int | None = None
    """Of those, failed (5xx)."""


class TrainingScheduleStatus(StatusModel):
    """Status of a TrainingSchedule."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    phase: str | None = None
    """Active, Suspended or Failed (an invalid spec)."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Serving, CanaryInProgress."""
    last_schedule_time: str | None = None
    """The newest tick handled (RFC 3339)."""
    next_schedule_time: str | None = None
    """The next tick (RFC 3339)."""
    active_run: str | None = None
    """The run in progress."""
    last_successful_run: RunRecord | None = None
    """The newest run that succeeded (its fingerprint is what the data trigger compares)."""
    in_service: ServedModel | None = None
    """The model the endpoint serves."""
    previous: ServedModel | None = None
    """The model served before it (what a rollback returns to)."""
    canary: CanaryStatus | None = None
    """A promotion on trial."""
    history: list[RunRecord] = Field(default_factory=list)
    """The newest ticks first: runs started and ticks skipped, with why."""
    serving: ServingStatus | None = None
    """The stable endpoint."""


class TrainingSchedule(Resource):
    """A TrainingSchedule resource: retrain on a schedule (when the data changed), gate each
    new model against the one in service, and serve the best through one stable endpoint."""

    KIND: ClassVar[str] = "TrainingSchedule"
    PLURAL: ClassVar[str] = "trainingschedules"
    SHORT_NAMES: ClassVar[list[str]] = ["tsch"]

    spec: TrainingScheduleSpec
    status: TrainingScheduleStatus | None = None

    @property
    def kind(self) -> str:
        return self.KIND


def unchanged_record(
    scheduled_time: str, since_run: str, fingerprint: str, rows: int, newest: str | None
) -> RunRecord:
    """The record of a tick the data trigger skipped: what it saw, and since which run."""
    seen = f"{rows} rows" + (f", newest {newest}" if newest else "")
    return RunRecord(
        scheduled_time=scheduled_time,
        phase="Skipped",
        reason="DataUnchanged",
        message=f"the data is unchanged since run {since_run} ({seen})",
        data_fingerprint=fingerprint,
        data_rows=rows,
    )


#: How many ticks the status remembers.
HISTORY_RECORDS: Final = 20


def run_name(schedule: str, tick: datetime) -> str:
    """The run of one tick: the schedule's name and the tick in minutes since the epoch (as
    a CronJob names its Jobs), so a tick can only ever create one run."""
    return f"{schedule}-{int(tick.timestamp()) // 60}"


#: The label every run carries: the schedule that created it.
LABEL_SCHEDULE: Final = "snowtrain.io/schedule"
#: A run's tick (RFC 3339), its source's fingerprint and row count at the tick: what the
#: data trigger and the history read back from the run.
ANNOTATION_TICK: Final = "snowtrain.io/scheduled-time"
ANNOTATION_FINGERPRINT: Final = "snowtrain.io/data-fingerprint"
ANNOTATION_ROWS: Final = "snowtrain.io/data-rows"


def run_manifest(
    schedule: TrainingSchedule,
    tick: datetime,
    *,
    champion_uri: str | None,
    fingerprint: str | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """The run of ``tick`` as a plain FineTuneJob/PretrainJob manifest (pure).

    Shared by the operator (which adds the owner reference and its managed-by label) and
    local mode (``snowtrain run schedule.yaml --once``), so a tick makes the same job in
    both. The template's serving block is dropped (the schedule's endpoint serves), and a
    gate's ``championUri`` is the model in service when there is one (the trainer evaluates
    it on the run's validation rows). The template's own championUri, if any, stands when
    the schedule serves nothing yet. A template ``output.path`` becomes ``<path>/<run>``.
    """
    meta = schedule.metadata
    template = schedule.spec.job_template
    spec = copy.deepcopy(template.spec)
    spec.pop("serving", None)
    promotion = spec.get("promotion")
    if isinstance(promotion, dict) and champion_uri:
        promotion["championUri"] = champion_uri
    name = run_name(meta.name or "", tick)
    output = spec.get("output")
    if isinstance(output, dict) and output.get("path"):
        # Every run keeps its own model (the one in service must never be overwritten).
        output["path"] = f"{str(output['path']).rstrip('/')}/{name}"
    annotations = {**template.metadata.annotations, ANNOTATION_TICK: now_iso(tick)}
    if fingerprint:
        annotations[ANNOTATION_FINGERPRINT] = fingerprint
    if rows is not None:
        annotations[ANNOTATION_ROWS] = str(rows)
    return {
        "apiVersion": API_VERSION,
        "kind": template.kind,
        "metadata": {
            "name": name,
            "namespace": meta.namespace,
            "labels": {**template.metadata.labels, LABEL_SCHEDULE: meta.name or ""},
            "annotations": annotations,
        },
        "spec": spec,
    }
