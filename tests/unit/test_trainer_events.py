"""The way back from the trainer is one typed protocol: the events it emits, the summary it
leaves, the exit codes it uses, the status the operator writes and the README that explains
it must all say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from snowtrain.api.events import (
    EXIT_REASONS,
    DataLineage,
    ExitCode,
    ProgressEvent,
    TrainerMetrics,
    reason_of_exit,
)
from snowtrain.api.status import (
    DataStatus,
    FailureReason,
    JobStatusBlock,
    MetricsStatus,
    ProgressStatus,
)
from snowtrain.trainer import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_every_status_metric_and_lineage_field_has_a_trainer_source() -> None:
    """The final summary is copied field by field into the status: a status field the
    trainer never reports would stay empty forever (as validationRows once did)."""
    assert set(MetricsStatus.model_fields) <= set(TrainerMetrics.model_fields)
    assert set(DataStatus.model_fields) == set(DataLineage.model_fields)
    # Progress: each status field from the progress event (updatedAt is the event's time).
    sources = set(ProgressEvent.model_fields) | {"updated_at"}
    assert set(ProgressStatus.model_fields) <= sources


def test_exit_codes_and_trainer_errors_are_one_table() -> None:
    classes = [errors.TrainerError, *errors.TrainerError.__subclasses__()]
    by_code = {cls.exit_code: cls.reason for cls in classes}
    assert by_code == {code: EXIT_REASONS[code] for code in ExitCode if code != ExitCode.OK}
    assert reason_of_exit(65) == FailureReason.DATA_ERROR
    assert reason_of_exit(0) is None and reason_of_exit(137) is None


def _status_section() -> str:
    text = README.read_text()
    return text[text.index("## What the status says") : text.index("## The trainer contract")]


def test_the_readme_status_section_names_every_status_field_and_reason() -> None:
    section = _status_section()
    named = set(re.findall(r"[A-Za-z][A-Za-z0-9]*(?=:)", section))
    for block in (JobStatusBlock, *(_nested(JobStatusBlock))):
        missing = _aliases(block) - named
        assert not missing, f"README status section lacks {block.__name__} fields {missing}"
    reasons = set(re.findall(r"`([A-Za-z]+)`", section))
    assert {str(r) for r in FailureReason} <= reasons, {str(r) for r in FailureReason} - reasons


def _nested(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The object-valued blocks of the status (conditions are listed by type, not fields)."""
    out = []
    for name, field in model.model_fields.items():
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and name != "conditions":
                out.append(arg)
    return out


def test_local_modes_summary_table_shows_only_metrics_the_trainer_reports() -> None:
    from snowtrain.cli.report import _METRICS

    assert {key for key, _, _ in _METRICS} <= _aliases(TrainerMetrics)
