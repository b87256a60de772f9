"""The RUNS table: every snowtrain resource's story in Snowflake, outliving the resource.

One row per resource uid (a re-created resource of the same name is another run), written
with a MERGE whenever what the row says changes (phase, progress, metrics, lineage, model,
failure, times, the whole status), and kept when the resource is deleted (``DELETED_AT``).
Everything comes from the resource's own status, which the operator keeps true: the bridge
reports what ``kubectl get -o yaml`` shows, including failures no trainer lived to report
(an OOM kill, an unschedulable pod).
"""

from __future__ import annotations

import json
from typing import Any

from snowtrain.api.identifiers import quote_table

from .requests import REQUEST_LABEL

#: RUNS columns the bridge writes, and how a bound value becomes the column's type.
_CONVERT = {
    "METRICS": "PARSE_JSON(?)",
    "SPEC": "PARSE_JSON(?)",
    "STATUS": "PARSE_JSON(?)",
    "STARTED_AT": "TO_TIMESTAMP_NTZ(?)",
    "ENDED_AT": "TO_TIMESTAMP_NTZ(?)",
    "CREATED_AT": "TO_TIMESTAMP_NTZ(?)",
}
COLUMNS = (
    "UID",
    "KIND",
    "NAMESPACE",
    "NAME",
    "REQUEST_ID",
    "PHASE",
    "PROGRESS_PERCENT",
    "METRICS",
    "DATA_ROWS",
    "DATA_QUERY_ID",
    "DATA_FINGERPRINT",
    "MODEL_URI",
    "MODEL_STAGE",
    "FAILURE_REASON",
    "FAILURE_MESSAGE",
    "STARTED_AT",
    "ENDED_AT",
    "CREATED_AT",
    "SPEC",
    "STATUS",
)


def _time(value: Any) -> str | None:
    """RFC 3339 from Kubernetes (``...Z``) as Snowflake's TO_TIMESTAMP_NTZ reads it."""
    return str(value).replace("T", " ").rstrip("Z") if value else None


def run_row(body: dict[str, Any]) -> dict[str, Any]:
    """The RUNS row of one resource, from its metadata, spec and status."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    progress = status.get("progress") or status.get("rows") or {}
    metrics = status.get("metrics") or status.get("rows")
    data = status.get("data") or {}
    model = status.get("model") or {}
    failure = status.get("failure") or {}
    job = status.get("job") or {}
    return {
        "UID": meta.get("uid"),
        "KIND": body.get("kind"),
        "NAMESPACE": meta.get("namespace"),
        "NAME": meta.get("name"),
        "REQUEST_ID": (meta.get("labels") or {}).get(REQUEST_LABEL),
        "PHASE": status.get("phase") or "Pending",
        "PROGRESS_PERCENT": progress.get("percent"),
        "METRICS": json.dumps(metrics) if metrics else None,
        "DATA_ROWS": data.get("rows"),
        "DATA_QUERY_ID": data.get("queryId"),
        "DATA_FINGERPRINT": data.get("fingerprint"),
        "MODEL_URI": model.get("uri"),
        "MODEL_STAGE": model.get("stage"),
        "FAILURE_REASON": failure.get("reason"),
        "FAILURE_MESSAGE": failure.get("message"),
        "STARTED_AT": _time(job.get("startTime")),
        "ENDED_AT": _time(job.get("completionTime")),
        "CREATED_AT": _time(meta.get("creationTimestamp")),
        "SPEC": json.dumps(body.get("spec") or {}, sort_keys=True),
        "STATUS": json.dumps(status, sort_keys=True),
    }


def upsert_sql(table: str) -> str:
    """One MERGE of one row (bound in ``COLUMNS`` order) keyed on UID."""
    quoted = quote_table(table)
    source = ", ".join(f'{_CONVERT.get(c, "?")} AS "{c}"' for c in COLUMNS)
    update = ", ".join(f'"{c}" = s."{c}"' for c in COLUMNS if c != "UID")
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    values = ", ".join(f's."{c}"' for c in COLUMNS)
    return (
        f'MERGE INTO {quoted} t USING (SELECT {source}) s ON t."UID" = s."UID" '
        f'WHEN MATCHED THEN UPDATE SET {update}, "UPDATED_AT" = CURRENT_TIMESTAMP(), '
        f'"DELETED_AT" = NULL '
        f'WHEN NOT MATCHED THEN INSERT ({names}, "UPDATED_AT") '
        f"VALUES ({values}, CURRENT_TIMESTAMP())"
    )


def row_params(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in COLUMNS)


def live_uids_sql(table: str) -> str:
    """The uids RUNS still counts as existing in a namespace (bound: the namespace)."""
    return f'SELECT "UID" FROM {quote_table(table)} WHERE "NAMESPACE" = ? AND "DELETED_AT" IS NULL'


def mark_deleted_sql(table: str) -> str:
    """Set DELETED_AT of one uid (bound) that is not marked yet."""
    return (
        f'UPDATE {quote_table(table)} SET "DELETED_AT" = CURRENT_TIMESTAMP(), '
        f'"UPDATED_AT" = CURRENT_TIMESTAMP() WHERE "UID" = ? AND "DELETED_AT" IS NULL'
    )
