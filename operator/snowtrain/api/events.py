"""What the trainer tells its readers: JSON events on stdout and one final summary.

The trainer is read through exactly two channels (README: "The trainer contract"): one JSON
object with an ``event`` field per stdout line (everything else is log text), and a summary in
the container's termination-message file. The operator reads them from a pod's log and
status, local mode from the child process. These models are that protocol, written once: the
trainer builds them to emit, both readers parse with them, and the exit-code <-> reason table
lives here alone.

Parsing is forgiving on purpose: a field a newer trainer adds is ignored by an older reader
(``extra="allow"``, never read), and a line that does not validate is log text, not a crash.
Emitting is strict: :func:`unknown_fields` lets the trainer refuse to print a field no reader
knows, which keeps the two sides from drifting apart silently.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from .status import FailureReason


def now_iso(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with a Z suffix, as Kubernetes writes times."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExitCode(IntEnum):
    """The trainer's exit codes (sysexits-style), each a failure the reader can act on."""

    OK = 0
    INTERNAL_ERROR = 1
    INVALID_SPEC = 64  # EX_USAGE: the config cannot be trained as written
    DATA_ERROR = 65  # EX_DATAERR: the rows are unusable
    UNAVAILABLE = 69  # EX_UNAVAILABLE: Snowflake (or another dependency) unreachable
    PREEMPTED = 75  # EX_TEMPFAIL: SIGTERM, checkpoint saved; a rerun resumes


#: Failure reason of each non-zero exit code (the reverse of the trainer's error classes).
EXIT_REASONS: dict[ExitCode, FailureReason] = {
    ExitCode.INTERNAL_ERROR: FailureReason.INTERNAL_ERROR,
    ExitCode.INVALID_SPEC: FailureReason.INVALID_SPEC,
    ExitCode.DATA_ERROR: FailureReason.DATA_ERROR,
    ExitCode.UNAVAILABLE: FailureReason.UNAVAILABLE,
    ExitCode.PREEMPTED: FailureReason.PREEMPTED,
}


def reason_of_exit(code: int | None) -> FailureReason | None:
    """The reason a known exit code stands for; None for 0 and codes the trainer never uses
    on purpose (a signal, the kernel's OOM killer)."""
    try:
        return EXIT_REASONS.get(ExitCode(code)) if code is not None else None
    except ValueError:
        return None


class WireModel(BaseModel):
    """camelCase on the wire; NaN/Infinity written as null (JSON has neither)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        ser_json_inf_nan="null",
    )

    def to_json(self) -> str:
        """One compact line, unset optional fields left out."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def to_wire(self) -> dict[str, object]:
        """The JSON object of :meth:`to_json`, as a dict."""
        result: dict[str, object] = json.loads(self.to_json())
        return result


class TrainerMetrics(WireModel):
    """Metrics of a finished (or stopped) run; the status copies the ones it declares."""

    train_loss: float | None = None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    eval_macro_f1: float | None = None
    perplexity: float | None = None
    tokens_per_second: float | None = None
    samples_per_second: float | None = None
    tokens_trained: int | None = None
    train_seconds: float | None = None
    steps: int | None = None
    mfu: float | None = None


class DataLineage(WireModel):
    """What was read: row counts, the Snowflake query id and a content hash."""

    rows: int | None = None
    validation_rows: int | None = None
    query_id: str | None = None
    fingerprint: str | None = None


class ModelInfo(WireModel):
    """Where the trained model went."""

    uri: str
    format: str = "safetensors"
    stage: str | None = None


class StartEvent(WireModel):
    """Training begins (after data and model are ready)."""

    event: Literal["start"] = "start"
    total_steps: int
    epochs: float | None = None
    resumed_from_step: int | None = None
    ranks: int = 1
    examples_per_rank: int | None = None
    """Training examples each rank takes per epoch: its share of a sharded ingest, cycled up
    to the largest rank's (all of them when one rank trains)."""
    compiled: bool = False
    time: str | None = None


class DataEvent(DataLineage):
    """The data was read and split."""

    event: Literal["data"] = "data"
    labels: list[str] | None = None


class ProgressEvent(WireModel):
    """Periodic progress, at most one per report interval."""

    event: Literal["progress"] = "progress"
    step: int
    total_steps: int | None = None
    percent: float | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    eval_loss: float | None = None
    mfu: float | None = None
    time: str | None = None


class EvalEvent(WireModel):
    """One evaluation on the validation rows."""

    event: Literal["eval"] = "eval"
    step: int
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    eval_macro_f1: float | None = None
    perplexity: float | None = None


class CheckpointEvent(WireModel):
    """A checkpoint was saved (a rerun resumes from it)."""

    event: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str | None = None


class PredictionCounts(WireModel):
    """A batch prediction's rows: how far it got and where they went."""

    rows_total: int | None = None
    rows_done: int | None = None
    """Rows committed (staged, or written at the end)."""
    failed_rows: int | None = None
    """Rows the model could not take (their answers are NULL)."""
    resumed_from_row: int | None = None
    """Rows earlier pods of the run had committed when this one started."""
    output_table: str | None = None
    mode: str | None = None
    run_id: str | None = None


class RowsEvent(WireModel):
    """A batch prediction's progress, after each committed chunk."""

    event: Literal["rows"] = "rows"
    rows_done: int
    rows_total: int | None = None
    rows_per_second: float | None = None
    eta_seconds: float | None = None
    resumed_from_row: int | None = None
    """Rows an earlier pod of the run had committed when this one started (on every line of
    the pod: a reader may see only the newest)."""
    time: str | None = None


class DataProbe(WireModel):
    """The source data at a schedule's tick: what the data trigger compares."""

    rows: int
    """Rows in the source."""
    newest: str | None = None
    """The newest value of the trigger's column, as text (None without a column, or when
    the source is empty)."""
    fingerprint: str
    """sha256 of the source's text, the row count and the newest value."""


class ChampionEvaluation(WireModel):
    """The model in service, evaluated on this run's validation rows (the evaluation gate)."""

    model: str | None = None
    """The champion's URI, as the job named it."""
    metrics: TrainerMetrics | None = None
    """Its validation metrics on the same rows as the new model."""
    problem: str | None = None
    """Why it could not be evaluated (missing, another task, unreadable)."""


class TrainerSummary(WireModel):
    """The run's end: the termination message, and the ``done`` event's body."""

    outcome: Literal["Succeeded", "Preempted", "Failed"]
    reason: str | None = None
    message: str | None = None
    exit_code: int
    step: int = 0
    total_steps: int | None = None
    metrics: TrainerMetrics = Field(default_factory=TrainerMetrics)
    model: ModelInfo | None = None
    data: DataLineage | None = None
    predictions: PredictionCounts | None = None
    """A batch prediction's rows (BatchPrediction only)."""
    champion: ChampionEvaluation | None = None
    """The champion's metrics on the same validation rows (jobs with an evaluation gate)."""
    probe: DataProbe | None = None
    """The source's fingerprint (the data probe of a TrainingSchedule)."""

    @classmethod
    def of_exit(cls, exit_code: int, **fields: object) -> TrainerSummary:
        """A summary whose outcome follows from the exit code (0, 75 or a failure)."""
        outcome = (
            "Succeeded"
            if exit_code == ExitCode.OK
            else "Preempted"
            if exit_code == ExitCode.PREEMPTED
            else "Failed"
        )
        return cls.model_validate({"outcome": outcome, "exit_code": exit_code, **fields})


class DoneEvent(TrainerSummary):
    """The last event: the same summary the termination message carries."""

    event: Literal["done"] = "done"


TrainerEvent = Annotated[
    StartEvent | DataEvent | ProgressEvent | RowsEvent | EvalEvent | CheckpointEvent | DoneEvent,
    Field(discriminator="event"),
]
EVENT_NAMES = ("start", "data", "progress", "rows", "eval", "checkpoint", "done")
_EVENT = TypeAdapter[TrainerEvent](TrainerEvent)


def build_event(name: str, **fields: object) -> TrainerEvent:
    """The event ``name`` with ``fields`` (camelCase or snake_case); raises ValueError for a
    field no reader knows (a typo or a new field nobody declared) or a wrong type."""
    event = _EVENT.validate_python({**fields, "event": name})
    extra = unknown_fields(event)
    if extra:
        raise ValueError(f"undeclared fields in the {name} event: {', '.join(sorted(extra))}")
    return event


def unknown_fields(model: BaseModel) -> set[str]:
    """Fields of ``model`` (and its nested models) that no model declares."""
    out = set(model.model_extra or {})
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out |= {f"{name}.{f}" for f in unknown_fields(value)}
    return out


def parse_event(line: str) -> TrainerEvent | None:
    """The event on one stdout line; None for log text (anything that is not a known,
    well-formed event)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        return _EVENT.validate_json(text)
    except ValidationError:
        return None


def parse_summary(text: str | None) -> TrainerSummary | None:
    """The trainer's final summary, or None when the text is not one (the log tail the
    kubelet falls back to, or a crash before the trainer ran)."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        return TrainerSummary.model_validate_json(text)
    except ValidationError:
        return None
