"""BatchPrediction (snowtrain.io/v1alpha1): a trained model run over a Snowflake table, its
answers written back to a Snowflake table.

``BatchPredictionSpec`` is what a user writes; ``predictor_config.PredictorConfig`` is what
the predictor pod reads, the same split as ``kinds.py`` / ``trainer_config.py`` for the
training kinds.

The output columns are fixed and documented (README: "BatchPrediction"): the key columns as
they are in the input, then ``LABEL``, ``SCORE`` and ``SCORES`` (a classifier) or
``COMPLETION`` and ``FINISH_REASON`` (a language model), then ``MODEL``, ``RUN_ID`` and
``PREDICTED_AT``. A key column may not share one of those names.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .base import YAML_FLOAT, ApiModel, Float
from .identifiers import COLUMN_PATTERN, TABLE_PATTERN, canonical_column
from .kinds import Resource
from .pod import PodOverrides
from .spec import (
    NAME_PATTERN,
    QUANTITY_PATTERN,
    LocalObjectReference,
    SnowflakeConnection,
    _one_of,
)
from .status import Condition, FailureStatus, JobStatus, StatusModel

#: Columns a classifier's predictions add, after the keys.
CLASSIFIER_COLUMNS = ("LABEL", "SCORE", "SCORES")
#: Columns a language model's completions add, after the keys.
COMPLETION_COLUMNS = ("COMPLETION", "FINISH_REASON")
#: Columns every output row ends with: which model, which run, when.
PROVENANCE_COLUMNS = ("MODEL", "RUN_ID", "PREDICTED_AT")
#: Names a key column may not have (the output would hold two columns of that name).
RESERVED_COLUMNS = frozenset(
    CLASSIFIER_COLUMNS + COMPLETION_COLUMNS + PROVENANCE_COLUMNS + ("SNOWTRAIN_ROW",)
)

WriteMode = Literal["append", "overwrite", "upsert"]


class PredictionModelRef(ApiModel):
    """The model to run: a training job's result, or a model directory."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": _one_of("fineTuneJobRef", "pretrainJobRef", "uri")
    }

    fine_tune_job_ref: LocalObjectReference | None = None
    """The model of this FineTuneJob; the prediction waits until the job has succeeded."""
    pretrain_job_ref: LocalObjectReference | None = None
    """The model of this PretrainJob; the prediction waits until the job has succeeded."""
    uri: str | None = Field(default=None, min_length=1, max_length=1024)
    """pvc://CLAIM/PATH (mounted read-only) or an absolute path inside the image or a
    mounted volume."""

    @model_validator(mode="after")
    def _one_source(self) -> PredictionModelRef:
        if (
            sum(x is not None for x in (self.fine_tune_job_ref, self.pretrain_job_ref, self.uri))
            != 1
        ):
            raise ValueError("set exactly one of fineTuneJobRef, pretrainJobRef or uri")
        return self


class PredictionInput(ApiModel):
    """The rows to predict: one Snowflake table or query, read in Arrow batches."""

    model_config = ApiModel.model_config | {"json_schema_extra": _one_of("table", "query")}

    snowflake: SnowflakeConnection = Field(default_factory=SnowflakeConnection)
    """Connection settings, used for the output table too."""
    table: str | None = Field(default=None, pattern=TABLE_PATTERN, max_length=800)
    """Table to read. Exactly one of table or query."""
    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    """A single SELECT statement. Exactly one of table or query."""
    key_columns: list[Annotated[str, Field(pattern=COLUMN_PATTERN, max_length=257)]] = Field(
        min_length=1, max_length=16
    )
    """Columns that identify a row: copied to the output, unique and never NULL (the run
    reads rows in their order, which is what lets a restarted pod go on where it stopped,
    and upsert matches on them)."""
    text_column: str = Field(default="TEXT", pattern=COLUMN_PATTERN, max_length=257)
    """The column fed to the model: a classifier's text, a language model's prompt. A NULL
    gives a row with NULL predictions."""
    max_rows: int | None = Field(default=None, ge=1)
    """Predict at most this many rows (the first by key)."""
    batch_rows: int = Field(default=8192, ge=64, le=1_000_000)
    """Rows read from Snowflake at a time: bounds the pod's memory."""

    @field_validator("key_columns")
    @classmethod
    def _usable_keys(cls, value: list[str]) -> list[str]:
        keys = [canonical_column(k) for k in value]
        if len(set(keys)) != len(keys):
            raise ValueError("a column is named twice")
        reserved = sorted(set(keys) & RESERVED_COLUMNS)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} is an output column's name; "
                "select the key under another name (a query with AS)"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PredictionInput:
        if bool(self.table) == bool(self.query):
            raise ValueError("set exactly one of table or query")
        return self


class PredictionOutput(ApiModel):
    """Where the predictions go."""

    table: str = Field(pattern=TABLE_PATTERN, max_length=800)
    """Output table, created when missing (in the input's database and schema unless
    qualified). It changes once, when the run ends: readers never see half a run."""
    mode: WriteMode = "append"
    """append: add this run's rows. overwrite: replace the table's rows with this run's.
    upsert: update the rows whose keys match, add the others."""
    commit_rows: int = Field(default=10_000, ge=100, le=10_000_000)
    """Rows per committed chunk: a restarted pod redoes at most this many."""


class GenerationSettings(ApiModel):
    """How a language model completes each prompt."""

    max_tokens: int = Field(default=128, ge=1, le=8192)
    """Most tokens generated per row."""
    temperature: Annotated[float, YAML_FLOAT] = Field(default=0.0, ge=0.0, le=2.0)
    """0 is greedy decoding (the same completion on every run)."""
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (temperature > 0)."""
    stop: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=8
    )
    """Stop strings: the completion ends before the first one."""
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    """Sampling seed (temperature > 0)."""


class PredictionResources(ApiModel):
    """What the prediction pod asks the scheduler for."""

    gpus: int = Field(default=0, ge=0, le=16)
    """GPUs (one process uses the first)."""
    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """CPU request and limit, e.g. "4"."""
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """Memory request and limit, e.g. "8Gi"."""
    gpu_resource_name: str = Field(default="nvidia.com/gpu", max_length=253)
    """Extended resource name of the GPU."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pod must match."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Pod tolerations (core/v1 Toleration)."""
    priority_class_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """PriorityClass of the pod."""


class BatchPredictionSpec(ApiModel):
    """Run a model over a Snowflake table; write its answers to a Snowflake table."""

    model: PredictionModelRef
    """The model."""
    input: PredictionInput
    """The rows to predict."""
    output: PredictionOutput
    """Where the answers go."""
    batch_size: int = Field(default=64, ge=1, le=4096)
    """Most rows per forward pass (rows of similar length are grouped within it)."""
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    """Generation settings (language models only)."""
    resources: PredictionResources = Field(default_factory=PredictionResources)
    """GPUs, CPU, memory and placement."""
    image: str | None = Field(default=None, max_length=1024)
    """Predictor image; default: the operator's configured trainer image."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail a run that takes longer than this (DeadlineExceeded)."""
    backoff_limit: int = Field(default=3, ge=0, le=100)
    """Pod retries before the run fails (each retry goes on from the last committed chunk)."""
    pod_template: PodOverrides | None = None
    """Typed additions to the pod, as a FineTuneJob's spec.podTemplate (the container is
    named "trainer")."""


class RowsStatus(StatusModel):
    """How far the run is, refreshed from the predictor's lines after each committed chunk."""

    done: int | None = None
    """Rows predicted and committed (they survive the pod)."""
    total: int | None = None
    """Rows to predict."""
    percent: float | None = None
    """0-100."""
    per_second: float | None = None
    """Rows per second of the current pod."""
    eta_seconds: float | None = None
    """Estimated seconds to the end."""
    resumed_from: int | None = None
    """Rows the current pod found committed by the ones before it."""
    failed: int | None = None
    """Rows the model could not take (their answers are NULL)."""
    updated_at: str | None = None
    """When the predictor last reported (RFC 3339)."""


class PredictionOutputStatus(StatusModel):
    """Where the answers went."""

    table: str | None = None
    """The output table."""
    mode: str | None = None
    """append, overwrite or upsert."""
    run_id: str | None = None
    """The RUN_ID of this run's rows."""


class PredictionModelStatus(StatusModel):
    """The model that answered."""

    uri: str | None = None
    """pvc://CLAIM/PATH of the model directory."""
    name: str | None = None
    """What the MODEL column says."""


class BatchPredictionStatus(StatusModel):
    """Status of a BatchPrediction."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    phase: str | None = None
    """Pending, Waiting, Queued, Running, Succeeded or Failed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Running, Succeeded, Failed, WaitingForModel."""
    rows: RowsStatus | None = None
    """Progress in rows."""
    output: PredictionOutputStatus | None = None
    """The output table."""
    model: PredictionModelStatus | None = None
    """The model."""
    failure: FailureStatus | None = None
    """Why it failed."""
    job: JobStatus | None = None
    """The prediction Job."""


class BatchPrediction(Resource):
    """A BatchPrediction resource: a trained model over a Snowflake table or query, its
    answers written to a Snowflake table (each input row once, resumed after a lost pod)."""

    KIND: ClassVar[str] = "BatchPrediction"
    PLURAL: ClassVar[str] = "batchpredictions"
    SHORT_NAMES: ClassVar[list[str]] = ["bp"]

    spec: BatchPredictionSpec
    status: BatchPredictionStatus | None = None

    @property
    def kind(self) -> str:
        return self.KIND
