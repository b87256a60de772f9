"""Check the data before training, so bad data fails in seconds instead of hours in.

A few aggregate queries, run before any model is loaded, refuse a missing column, no rows,
NULLs, one label class, labels only the validation data has, and non-text prompts, each with
a ``DataError`` naming the column and how many rows are bad.
"""

from __future__ import annotations

from dataclasses import dataclass

from snowflake.connector.constants import FIELD_ID_TO_NAME

from snowtrain.api.kinds import TASK_COLUMNS

from ..errors import DataError, InvalidConfig
from .columns import TEXT_ROLES, Columns, Rows
from .connection import LazyConnection
from .split import DataFingerprint

__all__ = ["MAX_LABELS", "DataFingerprint", "DataProfile", "profile_data"]

#: More distinct labels than this is not a classification problem we train.
MAX_LABELS = 10_000


@dataclass(frozen=True)
class DataProfile:
    """What ``SnowflakeSource.profile`` learned before training.

    ``rows`` counts the training source (both splits when validation is a hashed fraction);
    ``validation_rows`` is known up front only for a separate validation table/query (else
    None: the hashed split is counted during the pass, see ``DataFingerprint``).
    """

    rows: int
    validation_rows: int | None
    labels: list[str] | None
    column_types: dict[str, str]
    """Role -> Snowflake type name of its column (TEXT, FIXED, ...)."""


def profile_data(
    conn: LazyConnection, columns: Columns, task: str, train: Rows, validation: Rows | None
) -> DataProfile:
    """Check the data for ``task``; raise ``DataError`` naming the column and count."""
    needed = TASK_COLUMNS.get(task)
    if needed is None:
        raise InvalidConfig(f"unknown task {task!r}")
    missing_roles = [r for r in needed if r not in columns.names]
    if missing_roles:
        raise InvalidConfig(f"data.columns lacks role(s) {missing_roles} for task {task}")
    profiler = _Profiler(conn, columns)
    types = profiler.column_types(train, "data")
    rows = profiler.check_rows(train, types, "data")
    labels = None
    label_column = columns.names.get("label", "")
    if "label" in columns.roles:
        labels = sorted(profiler.label_counts(train))
        if len(labels) < 2:
            raise DataError(
                f"column {label_column} has a single label class {labels!r}: "
                "classification needs at least two",
                column=label_column,
                bad_rows=rows,
            )
    validation_rows = None
    if validation is not None:
        val_types = profiler.column_types(validation, "validation data")
        validation_rows = profiler.check_rows(validation, val_types, "validation data")
        if labels is not None:
            counts = profiler.label_counts(validation)
            unseen = {k: n for k, n in counts.items() if k not in labels}
            if unseen:
                raise DataError(
                    f"column {label_column}: {sum(unseen.values())} validation row(s) "
                    f"have labels absent from the training data: {sorted(unseen)[:10]}",
                    column=label_column,
                    bad_rows=sum(unseen.values()),
                )
    return DataProfile(
        rows=rows, validation_rows=validation_rows, labels=labels, column_types=types
    )


class _Profiler:
    """The profile's queries, each refusing what it finds wrong."""

    def __init__(self, conn: LazyConnection, columns: Columns) -> None:
        self._conn, self._columns = conn, columns

    def column_types(self, rows: Rows, what: str) -> dict[str, str]:
        """Role -> type name; ``DataError`` for a column the result does not have."""
        cur = self._conn.select(f"SELECT * FROM {rows.source} LIMIT 0", what=f"{what} column check")
        found = {d.name: FIELD_ID_TO_NAME[d.type_code] or "UNKNOWN" for d in cur.description}
        types = {}
        for role in self._columns.roles:
            name = self._columns.names[role]
            if name not in found:
                hint = [f for f in found if f.lower() == name.lower()]
                raise DataError(
                    f"{what}: column {name} (role {role}) not found; columns are "
                    f"{sorted(found)}"
                    + (f" (names are case-sensitive: {hint[0]}?)" if hint else ""),
                    column=name,
                )
            types[role] = found[name]
        return types

    def check_rows(self, rows: Rows, types: dict[str, str], what: str) -> int:
        """Count rows and NULLs per role column; refuse empty data, NULLs and non-text text."""
        roles = self._columns.roles
        sub, params = self._columns.select(rows, ordered=False)
        nulls = ", ".join(f'COUNT(*) - COUNT("C{i}")' for i in range(len(roles)))
        cur = self._conn.select(
            f"SELECT COUNT(*), {nulls} FROM ({sub})", params, what=f"{what} profile"
        )
        total, *null_counts = (int(v) for v in cur.fetchone())
        if total == 0:
            raise DataError(f"{what}: the source returned no rows", bad_rows=0)
        for role, n in zip(roles, null_counts, strict=True):
            if n:
                name = self._columns.names[role]
                raise DataError(
                    f"{what}: column {name} ({role}) has {n} NULL value(s) in {total} rows",
                    column=name,
                    bad_rows=n,
                )
        for role in roles:
            if role in TEXT_ROLES and types[role] != "TEXT":
                name = self._columns.names[role]
                raise DataError(
                    f"{what}: column {name} ({role}) must be text, found {types[role]} "
                    f"in all {total} rows",
                    column=name,
                    bad_rows=total,
                )
        return total

    def label_counts(self, rows: Rows) -> dict[str, int]:
        """Rows per label value; ``DataError`` past ``MAX_LABELS`` distinct values."""
        sub, params = self._columns.select(rows, ordered=False)
        i = self._columns.roles.index("label")
        cur = self._conn.select(
            f'SELECT "C{i}", COUNT(*) FROM ({sub}) GROUP BY 1 ORDER BY 1 LIMIT {MAX_LABELS + 1}',
            params,
            what="label profile",
        )
        counts = {str(k): int(n) for k, n in cur.fetchall()}
        if len(counts) > MAX_LABELS:
            name = self._columns.names["label"]
            raise DataError(
                f"column {name} has more than {MAX_LABELS} distinct labels", column=name
            )
        return counts
