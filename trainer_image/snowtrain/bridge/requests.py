"""Fine-tune requests from a Snowflake table: each new row becomes a job, or a refusal, once.

Idempotent by construction: a request's job is named from the request (its MODEL_NAME, or
the template's prefix and the request id) and labelled with the request id. Creating it
again answers 409 and the existing job, when it carries the same request id, is the answer;
so a bridge that dies between creating the job and answering the row answers it on its next
pass, and never starts a request twice. A row is answered with one UPDATE that only touches
rows still unanswered.

The requester chooses only what the template opens (base model by allowed name, table,
epochs, name); the result is validated exactly as the webhook validates a job
(``parse_job``), so a refusal names the field and the reason.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from snowtrain.api.identifiers import (
    IDENTIFIER_PART,
    InvalidIdentifier,
    canonical_column,
    quote_table,
)
from snowtrain.api.kinds import API_VERSION
from snowtrain.api.validation import InvalidJob, parse_job

from .config import RequestTemplate

#: Label on a job the front door created: which request it answers.
REQUEST_LABEL = "snowtrain.io/request-id"
#: The columns read from the request table, in this order.
REQUEST_COLUMNS = ("REQUEST_ID", "BASE_MODEL", "TRAINING_DATA", "EPOCHS", "MODEL_NAME")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class Refused(ValueError):
    """A request that cannot become a job; the message goes back into its row."""


@dataclass(frozen=True)
class Request:
    request_id: str
    base_model: str | None
    training_data: str | None
    epochs: Any
    model_name: str | None

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> Request:
        rid, base, data, epochs, name = row
        return cls(str(rid), base, data, epochs, name)


def job_name(request: Request, template: RequestTemplate) -> str:
    """The job's name: the request's MODEL_NAME, or the prefix and the request id."""
    if request.model_name:
        name = str(request.model_name).strip().lower().replace("_", "-")
        if not _DNS_LABEL.match(name):
            raise Refused(
                f"MODEL_NAME {request.model_name!r}: a model's name is a Kubernetes name "
                "(letters, digits and - , starting with a letter, at most 63)"
            )
        return name
    slug = re.sub(r"[^a-z0-9]", "", request.request_id.lower())[:20]
    if not slug:
        slug = hashlib.sha256(request.request_id.encode()).hexdigest()[:12]
    return f"{template.name_prefix}{slug}"


def _training_table(value: str | None, template: RequestTemplate) -> str:
    if not value or not str(value).strip():
        raise Refused("TRAINING_DATA: required (a table: [DATABASE.][SCHEMA.]TABLE)")
    table = str(value).strip()
    try:
        quote_table(table)
    except InvalidIdentifier as exc:
        raise Refused(f"TRAINING_DATA: {exc}") from None
    if template.allowed_databases:
        parts = re.findall(IDENTIFIER_PART, table)
        allowed = {canonical_column(d) for d in template.allowed_databases}
        if len(parts) != 3 or canonical_column(parts[0]) not in allowed:
            raise Refused(
                f"TRAINING_DATA: {table} must be a DATABASE.SCHEMA.TABLE in "
                f"{', '.join(sorted(allowed))}"
            )
    return table


def _epochs(value: Any, template: RequestTemplate) -> float:
    try:
        epochs = float(value) if value is not None else 3.0
    except (TypeError, ValueError):
        raise Refused(f"EPOCHS: {value!r} is not a number") from None
    if not 0 < epochs <= template.max_epochs:
        raise Refused(f"EPOCHS: {value} is outside 0 < epochs <= {template.max_epochs}")
    return epochs


def build_job(request: Request, template: RequestTemplate, namespace: str) -> dict[str, Any]:
    """The FineTuneJob of ``request``, or :class:`Refused` saying what is wrong with it."""
    if not _LABEL_VALUE.match(request.request_id):
        raise Refused("REQUEST_ID: must be a label value (letters, digits, - _ ., at most 63)")
    base = (request.base_model or "").strip()
    if base not in template.allowed_base_models:
        allowed = ", ".join(sorted(template.allowed_base_models))
        raise Refused(f"BASE_MODEL: {base!r} is not one this installation offers ({allowed})")
    spec = copy.deepcopy(template.spec)
    spec["baseModel"] = {"uri": template.allowed_base_models[base]}
    spec.setdefault("data", {})["table"] = _training_table(request.training_data, template)
    spec["data"].pop("query", None)
    spec.setdefault("training", {})["epochs"] = _epochs(request.epochs, template)
    job = {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "metadata": {
            "name": job_name(request, template),
            "namespace": namespace,
            "labels": {REQUEST_LABEL: request.request_id},
        },
        "spec": spec,
    }
    try:
        parse_job(job)
    except InvalidJob as exc:
        raise Refused(f"the job this request makes is invalid: {exc}") from None
    return job
