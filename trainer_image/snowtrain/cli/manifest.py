"""Read a job YAML exactly as ``kubectl apply`` would receive it, and validate it with the API.

Validation is :func:`snowtrain.api.validation.parse_resource`, the function the admission webhook and the
operator use, so a file that passes here is accepted by the cluster and vice versa. Problems
become a :class:`UserError` listing every bad field by its YAML path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from snowtrain.api import AnyJob, InvalidJob
from snowtrain.api.batch import BatchPrediction
from snowtrain.api.schedule import TrainingSchedule
from snowtrain.api.validation import AnyResource, parse_resource

from .errors import UserError


def load_documents(path: Path) -> list[Any]:
    """The non-empty YAML documents of ``path``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path}:{where}: not valid YAML: {problem}") from None
    if not docs:
        raise UserError(f"{path}: the file is empty")
    return docs


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        kind = doc.get("kind", "resource")
        name = (
            (doc.get("metadata") or {}).get("name")
            if isinstance(doc.get("metadata"), dict)
            else None
        )
        return f"{kind} {name}" if name else str(kind)
    return "document"


def validate_documents(path: Path, docs: list[Any]) -> list[AnyResource]:
    """Validate every document; raise one :class:`UserError` listing all bad fields."""
    jobs: list[AnyResource] = []
    problems: list[str] = []
    for index, doc in enumerate(docs):
        try:
            jobs.append(parse_resource(doc))
        except InvalidJob as exc:
            label = _describe(doc) + (f" (document {index + 1})" if len(docs) > 1 else "")
            problems.append(f"{path}: {label} is invalid:")
            problems.extend(f"  {err}" for err in exc.errors)
    if problems:
        raise UserError("\n".join(problems))
    return jobs


def load_resource(path: Path) -> AnyResource:
    """The one FineTuneJob, PretrainJob, BatchPrediction or TrainingSchedule in ``path``
    (what ``snowtrain run`` runs)."""
    docs = load_documents(path)
    if len(docs) != 1:
        raise UserError(
            f"{path}: holds {len(docs)} documents; snowtrain run takes a file with one "
            "FineTuneJob, PretrainJob, BatchPrediction or TrainingSchedule"
        )
    job = validate_documents(path, docs)[0]
    if not job.metadata.name:
        raise UserError(f"{path}: {job.kind} is invalid:\n  metadata.name: field required")
    return job


def load_job(path: Path) -> AnyJob:
    """The one FineTuneJob or PretrainJob in ``path`` (what ``snowtrain run`` trains)."""
    job = load_resource(path)
    if isinstance(job, BatchPrediction):
        raise UserError(f"{path}: a BatchPrediction has no trainer config; this takes a job")
    if isinstance(job, TrainingSchedule):
        # Each tick renders its own run (champion, per-run paths): there is no one config.
        raise UserError(
            f"{path}: a TrainingSchedule has no trainer config of its own; each tick creates "
            "a job from spec.jobTemplate (run one locally with: snowtrain run FILE --once)"
        )
    return job
