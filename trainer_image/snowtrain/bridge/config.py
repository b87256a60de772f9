"""The bridge's config file (the chart renders it into a ConfigMap; no secret in it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from snowtrain.api.base import ApiModel
from snowtrain.api.identifiers import TABLE_PATTERN
from snowtrain.api.trainer_config import SnowflakeSettings, load_config_file


class RequestTemplate(ApiModel):
    """What the admin decides and what requesters may choose.

    A request names a base model (one of ``allowedBaseModels``: name -> URI), a training
    table (in one of ``allowedDatabases`` when that is set), epochs (up to ``maxEpochs``) and
    optionally the model's name; everything else comes from ``spec``, a FineTuneJob spec the
    admin owns (data columns and Secret, resources, output volume, serving).
    """

    allowed_base_models: dict[str, str] = Field(min_length=1)
    """Names requesters use -> the ``baseModel.uri`` the job gets."""
    allowed_databases: list[str] = Field(default_factory=list)
    """Databases the training table may be in (empty: any the template's Secret can read)."""
    max_epochs: int = Field(default=20, ge=1, le=1000)
    """The most epochs a request may ask for."""
    name_prefix: str = Field(default="req-", pattern=r"^[a-z]([-a-z0-9]{0,20})?$")
    """Prefix of a job's name when the request gives none (then the request id follows)."""
    spec: dict[str, Any]
    """The FineTuneJob spec every request starts from (validated per request, as a job)."""


class BridgeConfig(ApiModel):
    """Where the bridge reads and writes, and the template."""

    namespace: str = Field(min_length=1, max_length=63)
    """Where jobs are created and whose resources the RUNS table follows."""
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    """The bridge's own connection (its Secret is mounted at credentialsDir)."""
    request_table: str = Field(default="SNOWTRAIN.PUBLIC.FINETUNE_REQUESTS", pattern=TABLE_PATTERN)
    runs_table: str = Field(default="SNOWTRAIN.PUBLIC.RUNS", pattern=TABLE_PATTERN)
    poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    """A pass over requests and runs this often."""
    template: RequestTemplate

    @classmethod
    def load(cls, path: str | Path) -> BridgeConfig:
        return load_config_file(cls, path)
