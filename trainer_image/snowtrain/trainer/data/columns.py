"""Which column plays which role, in the SQL the source sends and the Arrow it gets back.

A trainer config maps roles (``text``, ``label``, ``prompt``, ``completion``) to column
names. Every query selects the role columns aliased ``C0..Cn`` (so a column name never has to
survive the round trip through the result set), and every result is renamed back to role
names and checked here, so the profile, the training pass and the validation pass agree on
one reading of the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError
from .sql import column_ref

#: Roles whose column must be text (labels may be any scalar: they are cast to VARCHAR).
TEXT_ROLES = ("text", "prompt", "completion")


@dataclass(frozen=True)
class Rows:
    """A FROM clause (a quoted table or a checked subquery) and the row cap read from it."""

    source: str
    limit: int | None = None


class Columns:
    """The role -> column mapping of one config, validated and quoted on construction."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.roles: list[str] = list(columns)
        self.names = dict(columns)
        self._quoted = {role: column_ref(name) for role, name in columns.items()}

    @property
    def split_key(self) -> str:
        """The role whose value decides a row's split: identical texts never straddle it."""
        for role in ("prompt", "text"):
            if role in self.roles:
                return role
        return self.roles[0]

    def select(self, rows: Rows, *, ordered: bool) -> tuple[str, tuple[Any, ...]]:
        """Role columns aliased C0..Cn (labels cast to text), optionally ordered and limited.

        The order is ``HASH(role columns), role columns``: a limit then picks the same rows in
        every run, and a resumed run streams them in the same order.
        """
        exprs = []
        for i, role in enumerate(self.roles):
            col = self._quoted[role]
            expr = f"CAST({col} AS VARCHAR)" if role == "label" else col
            exprs.append(f'{expr} AS "C{i}"')
        sql = f"SELECT {', '.join(exprs)} FROM {rows.source}"
        params: tuple[Any, ...] = ()
        if ordered or rows.limit is not None:
            cols = ", ".join(self._quoted[r] for r in self.roles)
            sql += f" ORDER BY HASH({cols}), {cols}"
        if rows.limit is not None:
            sql += " LIMIT ?"
            params = (rows.limit,)
        return sql, params

    def as_roles(self, table: pa.Table) -> pa.Table:
        """Rename C0..Cn to role names; refuse NULLs and non-text text.

        The profile has already refused both; this is defence in depth for data that changed
        between the profile and the pass.
        """
        table = table.rename_columns(self.roles)
        for role in self.roles:
            col = table.column(role)
            name = self.names[role]
            if col.null_count:
                raise DataError(
                    f"column {name} ({role}) has NULL values", column=name, bad_rows=col.null_count
                )
            if role == "label" and not pa.types.is_string(col.type):
                table = table.set_column(self.roles.index(role), role, pc.cast(col, pa.string()))
            elif role in TEXT_ROLES and not (
                pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            ):
                raise DataError(
                    f"column {name} ({role}) must be text, found {col.type}",
                    column=name,
                    bad_rows=len(col),
                )
        return table
