"""The predictor's input: one typed config file, as ``trainer_config.py`` is the trainer's.

The operator renders it from a BatchPrediction into a ConfigMap; local mode renders it from
the same YAML; ``python -m snowtrain.predict`` reads it. It carries no secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from .base import ApiModel
from .batch import BatchPrediction, GenerationSettings, PredictionOutput
from .identifiers import canonical_column
from .trainer_config import ProgressConfig, SnowflakeSettings, load_config_file, snowflake_settings


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
