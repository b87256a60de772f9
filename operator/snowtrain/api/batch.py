"""BatchPrediction (snowtrain.io/v1alpha1): a trained model run over a Snowflake table, its
answers written back to a Snowflake table.

``BatchPredictionSpec`` is what a user writes; ``PredictorConfig`` is what the predictor pod
reads (rendered by the operator or local mode, no secret in it), the same split as
``kinds.py`` / ``trainer_config.py`` for the training kinds.

The output columns are fixed and documented (README: "BatchPrediction"): the key columns as
they are in the input, then ``LABEL``, ``SCORE`` and ``SCORES`` (a classifier) or
``COMPLETION`` and ``FINISH_REASON`` (a language model), then ``MODEL``, ``RUN_ID`` and
``PREDICTED_AT``. A key column may not share one of those names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from .base import YAML_FLOAT, ApiModel, Float
from .identifiers import COLUMN_PATTERN, TABLE_PATTERN, canonical_column
from .kinds import API_VERSION, ObjectMeta
from .pod import PodOverrides
from .spec import (
    NAME_PATTERN,
    QUANTITY_PATTERN,
    LocalObjectReference,
    SnowflakeConnection,
    _one_of,
)
from .trainer_config import (
    ProgressConfig,
    SnowflakeSettings,
    load_config_file,
    snowflake_settings,
)

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

    @model_validator(mode="after")
    def _check(self) -> PredictionInput:
        if bool(self.table) == bool(self.query):
            raise ValueError("set exactly one of table or query")
        keys = [canonical_column(k) for k in self.key_columns]
        if len(set(keys)) != len(keys):
            raise ValueError("keyColumns: a column is named twice")
        reserved = sorted(set(keys) & RESERVED_COLUMNS)
        if reserved:
            raise ValueError(
                f"keyColumns: {', '.join(reserved)} is an output column's name; "
                "select the key under another name (a query with AS)"
            )
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


class BatchPrediction(ApiModel):
    """A BatchPrediction resource."""

    KIND: ClassVar[str] = "BatchPrediction"
    PLURAL: ClassVar[str] = "batchpredictions"
    SHORT_NAMES: ClassVar[list[str]] = ["bp"]

    api_version: Literal["snowtrain.io/v1alpha1"] = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BatchPredictionSpec
    status: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:
            if data["kind"] != cls.KIND:
                raise ValueError(f"kind must be {cls.KIND}, got {data['kind']!r}")
            data = {k: v for k, v in data.items() if k != "kind"}
        return data

    def to_wire(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.KIND, **super().to_wire()}


class PredictorInputConfig(ApiModel):
    """What the predictor reads: the source and the resolved (result-set) column names."""

    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    table: str | None = None
    query: str | None = None
    key_columns: list[str]
    """Canonical spellings (``id`` -> ``ID``, ``"My Id"`` -> ``My Id``)."""
    text_column: str
    """Canonical spelling."""
    max_rows: int | None = None
    batch_rows: int = 8192


class PredictorConfig(ApiModel):
    """Everything the predictor needs, and nothing secret."""

    name: str
    namespace: str | None = None
    run_id: str
    """Identifies this run in the output (RUN_ID) and names its staging table: the same on
    every retry of the run, so a retry finds the chunks its predecessors committed."""
    model_dir: str
    """The exported model directory inside the pod."""
    model_name: str
    """What the MODEL column says (the model's URI or its job)."""
    input: PredictorInputConfig
    output: PredictionOutput
    batch_size: int = 64
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    progress: ProgressConfig = Field(default_factory=ProgressConfig)

    @classmethod
    def load(cls, path: str | Path) -> PredictorConfig:
        """Read a JSON or YAML config file."""
        return load_config_file(cls, path)

    def dumps(self) -> str:
        """JSON text of the config, as stored in the ConfigMap."""
        return json.dumps(self.to_wire(), indent=2, sort_keys=True)


def render_predictor_config(
    job: BatchPrediction,
    *,
    run_id: str,
    model_dir: str,
    model_name: str,
    credentials_dir: str | None = None,
    snowflake_overrides: Mapping[str, str | int | None] | None = None,
    progress_interval_seconds: float = 5.0,
) -> PredictorConfig:
    """Turn a validated resource into the predictor config (pure; used by operator and CLI)."""
    spec = job.spec
    settings = snowflake_settings(spec.input.snowflake, credentials_dir, snowflake_overrides)
    return PredictorConfig(
        name=job.metadata.name or "prediction",
        namespace=job.metadata.namespace,
        run_id=run_id,
        model_dir=model_dir,
        model_name=model_name,
        input=PredictorInputConfig(
            snowflake=settings,
            table=spec.input.table,
            query=spec.input.query,
            key_columns=[canonical_column(k) for k in spec.input.key_columns],
            text_column=canonical_column(spec.input.text_column),
            max_rows=spec.input.max_rows,
            batch_rows=spec.input.batch_rows,
        ),
        output=spec.output,
        batch_size=spec.batch_size,
        generation=spec.generation,
        progress=ProgressConfig(interval_seconds=progress_interval_seconds),
    )
