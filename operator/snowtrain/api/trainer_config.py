"""The trainer's input: one typed, torch-free config file.

The operator renders it from a resource into a ConfigMap; local mode renders it from the same
YAML; the trainer reads it with ``TrainerConfig.load``. It carries no secret: credentials reach
the trainer through environment variables or a mounted Secret directory (``credentialsDir``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import Field, ValidationError

from .base import ApiModel
from .identifiers import canonical_column
from .kinds import TASK_COLUMNS, AnyJob, FineTuneJob, JobKind, Task
from .spec import (
    ArchitectureSpec,
    SnowflakeConnection,
    TokenizerSpec,
    TrainingSpec,
    ValidationSource,
)
from .validation import errors_from_pydantic


class ConfigFileError(ValueError):
    """A config file that cannot be parsed or validated.

    The message names the field or the position and never quotes the file's content:
    pydantic's and PyYAML's own messages echo input values and source lines, and a password
    pasted into the config by mistake would reach the logs, the termination message and the
    resource's status.
    """


M = TypeVar("M", bound=ApiModel)


def load_config_file(model: type[M], path: str | Path) -> M:
    """Read a JSON or YAML file as ``model``; ``ConfigFileError`` naming the field or the
    position, never the content."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError("not UTF-8 text") from None
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigFileError(
            f"not valid YAML: {getattr(exc, 'problem', None) or 'syntax error'}{where}"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError("; ".join(map(str, errors_from_pydantic(exc)))) from None


class SnowflakeSettings(ApiModel):
    """Non-secret connection settings; secrets come from env or ``credentialsDir``."""

    credentials_dir: str | None = None
    """Directory with one file per credential key (a mounted Secret)."""
    account: str | None = None
    user: str | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    host: str | None = None
    port: int | None = None
    protocol: Literal["https", "http"] | None = None
    login_timeout_seconds: int = 60
    network_timeout_seconds: int = 300
    retries: int = 3


class TrainerDataConfig(ApiModel):
    """What to read and how."""

    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    table: str | None = None
    query: str | None = None
    columns: dict[str, str]
    """Role -> column name, every role of the task filled in."""
    validation: ValidationSource = Field(default_factory=ValidationSource)
    max_rows: int | None = None
    batch_rows: int = 8192


class OutputConfig(ApiModel):
    """Where results go inside the trainer's filesystem."""

    dir: str
    """The exported model directory (written atomically)."""
    checkpoint_dir: str
    """Checkpoints; on a persistent volume they survive preemption."""
    uri: str | None = None
    """How the model is addressed outside the pod (pvc://claim/path); reported in status."""
    stage: str | None = None
    """Snowflake stage to upload the exported model to."""


class ProgressConfig(ApiModel):
    """Progress reporting cadence."""

    interval_seconds: float = Field(default=5.0, ge=0.0)
    """At most one progress line per interval (plus the last step)."""


class ChampionConfig(ApiModel):
    """The model in service, to evaluate on the same validation rows (evaluation gate)."""

    path: str
    """Where the pod sees it (a read-only mount, or a hub id)."""
    uri: str
    """How the job named it (reported back with its metrics)."""


class TrainerConfig(ApiModel):
    """Everything the trainer needs, and nothing secret."""

    kind: JobKind
    name: str
    namespace: str | None = None
    task: Task
    base_model: str | None = None
    """Local path or hub id of the starting model (fine-tuning)."""
    architecture: ArchitectureSpec | None = None
    """Model to build (pretraining)."""
    tokenizer: TokenizerSpec | None = None
    """Tokenizer to train or load (pretraining)."""
    data: TrainerDataConfig
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    output: OutputConfig
    progress: ProgressConfig = Field(default_factory=ProgressConfig)
    champion: ChampionConfig | None = None
    """Evaluate this model too, after training, on the same validation rows."""

    @classmethod
    def load(cls, path: str | Path) -> TrainerConfig:
        """Read a JSON or YAML config file."""
        return load_config_file(cls, path)

    def dumps(self) -> str:
        """JSON text of the config, as stored in the ConfigMap."""
        return json.dumps(self.to_wire(), indent=2, sort_keys=True)


def resolve_columns(job: AnyJob) -> dict[str, str]:
    """Role -> column for every role the task needs; unmapped roles default to ROLE upper-cased."""
    mapping = job.spec.data.columns
    return {
        role: canonical_column(mapping.get(role, role.upper())) for role in TASK_COLUMNS[job.task]
    }


def default_output_path(job: AnyJob) -> str:
    """``<kind>/<namespace>/<name>``: unique per job inside a shared model volume."""
    return f"{job.kind.lower()}/{job.metadata.namespace or 'default'}/{job.metadata.name}"


def snowflake_settings(
    conn: SnowflakeConnection,
    credentials_dir: str | None = None,
    overrides: Mapping[str, str | int | None] | None = None,
) -> SnowflakeSettings:
    """A spec's connection block as a pod's settings: the Secret mounted at
    ``credentials_dir``, then ``overrides`` (what the installation imposes) on top."""
    settings = SnowflakeSettings(
        credentials_dir=credentials_dir,
        account=conn.account,
        user=conn.user,
        role=conn.role,
        warehouse=conn.warehouse,
        database=conn.database,
        schema_=conn.schema_,
        login_timeout_seconds=conn.login_timeout_seconds,
        network_timeout_seconds=conn.network_timeout_seconds,
        retries=conn.retries,
    )
    return settings.model_copy(update=overrides) if overrides else settings


def render_trainer_config(
    job: AnyJob,
    *,
    output_dir: str,
    checkpoint_dir: str,
    output_uri: str | None = None,
    base_model: str | None = None,
    credentials_dir: str | None = None,
    snowflake_overrides: Mapping[str, str | int | None] | None = None,
    progress_interval_seconds: float = 5.0,
    champion_path: str | None = None,
) -> TrainerConfig:
    """Turn a validated resource into the trainer config (pure; used by operator and CLI).

    ``base_model`` is the resolved location of the starting model (a pretrainJobRef or a
    pvc:// URI resolves to a mount path only the caller knows); ``champion_path`` likewise
    for ``spec.promotion.championUri``.
    """
    spec = job.spec
    settings = snowflake_settings(spec.data.snowflake, credentials_dir, snowflake_overrides)
    resolved_base_model: str | None = None
    architecture: ArchitectureSpec | None = None
    tokenizer: TokenizerSpec | None = None
    if isinstance(job, FineTuneJob):
        resolved_base_model = base_model or job.spec.base_model.uri
    else:
        architecture, tokenizer = job.spec.architecture, job.spec.tokenizer
    return TrainerConfig(
        kind=job.kind,
        name=job.metadata.name or "job",
        namespace=job.metadata.namespace,
        task=job.task,
        base_model=resolved_base_model,
        architecture=architecture,
        tokenizer=tokenizer,
        data=TrainerDataConfig(
            snowflake=settings,
            table=spec.data.table,
            query=spec.data.query,
            columns=resolve_columns(job),
            validation=spec.data.validation,
            max_rows=spec.data.max_rows,
            batch_rows=spec.data.batch_rows,
        ),
        training=spec.training,
        output=OutputConfig(
            dir=output_dir, checkpoint_dir=checkpoint_dir, uri=output_uri, stage=spec.output.stage
        ),
        progress=ProgressConfig(interval_seconds=progress_interval_seconds),
        champion=_champion(job, champion_path),
    )


def _champion(job: AnyJob, path: str | None) -> ChampionConfig | None:
    promotion = job.spec.promotion
    if promotion is None or not promotion.champion_uri:
        return None
    return ChampionConfig(path=path or promotion.champion_uri, uri=promotion.champion_uri)
