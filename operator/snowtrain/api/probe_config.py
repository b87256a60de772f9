"""The data probe's input: one typed config file (as ``trainer_config.py`` is the trainer's).

A TrainingSchedule with a data trigger runs ``python -m snowtrain.probe`` in a small pod
before each run: it asks Snowflake for the source's row count and the newest value of one
column, and reports a fingerprint of the two in its termination message
(``TrainerSummary.probe``). The operator compares it with the last successful run's and
starts the run only when it differs. The config carries no secret.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from .base import ApiModel
from .trainer_config import SnowflakeSettings, load_config_file


class ProbeConfig(ApiModel):
    """What the probe reads: the run's source and, optionally, one column's newest value."""

    name: str
    """The schedule (for the logs)."""
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    table: str | None = None
    query: str | None = None
    column: str | None = None
    """Canonical spelling of the column whose MAX joins the row count."""

    @classmethod
    def load(cls, path: str | Path) -> ProbeConfig:
        """Read a JSON or YAML config file."""
        return load_config_file(cls, path)

    def dumps(self) -> str:
        """JSON text of the config, as stored in the ConfigMap."""
        return json.dumps(self.to_wire(), indent=2, sort_keys=True)
