"""The rows to predict, read from Snowflake in key order so that a restarted pod can go on.

The order is what makes a resume exact: row ``i`` of the ordered result is the same row on
every attempt, so "rows ``[0, n)`` are committed" means the same thing to the pod that
committed them and to the one that takes over. Keys must therefore be unique and non-NULL
(``check`` counts both before any model is loaded). The result is read as the connector's
``ResultBatch``es: each knows its row count before it is downloaded, so a resumed pod
downloads only the chunks past what was committed (``rows_in_range``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from snowtrain.api.predictor_config import PredictorInputConfig
from snowtrain.trainer.data.connection import LazyConnection
from snowtrain.trainer.data.shard import rows_in_range
from snowtrain.trainer.data.source import _downloads
from snowtrain.trainer.data.sql import column_ref, subquery, table_ref
from snowtrain.trainer.errors import DataError

log = logging.getLogger(__name__)

#: The text column's alias in the result (keys come back as K0..Kn).
TEXT_ALIAS = "T"


class PredictionSource:
    """One config's input: names validated and quoted on construction (before any query)."""

    def __init__(self, cfg: PredictorInputConfig, conn: LazyConnection) -> None:
        self.cfg = cfg
        self._conn = conn
        base = table_ref(cfg.table) if cfg.table else subquery(cfg.query or "")
        self.keys = list(cfg.key_columns)
        self._quoted_keys = [column_ref(k) for k in self.keys]
        self._text = column_ref(cfg.text_column)
        self._order = ", ".join(self._quoted_keys)
        self._params: tuple[Any, ...] = ()
        if cfg.max_rows is not None:  # the first max_rows rows by key, the same every time
            base = f"(SELECT * FROM {base} ORDER BY {self._order} LIMIT ?)"
            self._params = (cfg.max_rows,)
        self.relation = base
        """The FROM clause of the rows to predict (with ``params`` bound)."""

    @property
    def params(self) -> tuple[Any, ...]:
        return self._params

    @property
    def quoted_keys(self) -> list[str]:
        return list(self._quoted_keys)

    def check(self) -> int:
        """Count the rows; ``DataError`` when a key is NULL or shared by several rows."""
        nulls = " OR ".join(f"{k} IS NULL" for k in self._quoted_keys)
        cur = self._conn.select(
            f"SELECT COUNT(*), COUNT_IF({nulls}), COUNT_IF({self._text} IS NULL) "
            f"FROM {self.relation}",
            self._params,
            what="input check",
        )
        total, null_keys, null_texts = (int(v or 0) for v in cur.fetchone())
        if null_keys:
            raise DataError(
                f"input.keyColumns: {null_keys} row(s) have a NULL key "
                f"({', '.join(self.keys)}); every row needs a key",
                column=", ".join(self.keys),
                bad_rows=null_keys,
            )
        cur = self._conn.select(
            f"SELECT COUNT(*), SUM(N) FROM (SELECT COUNT(*) AS N FROM {self.relation} "
            f"GROUP BY {self._order} HAVING COUNT(*) > 1)",
            self._params,
            what="input key check",
        )
        shared, rows = (int(v or 0) for v in cur.fetchone())
        if shared:
            raise DataError(
                f"input.keyColumns: {shared} key(s) of ({', '.join(self.keys)}) are shared by "
                f"{rows} rows; keys must be unique (a resumed run reads rows in key order, and "
                "upsert matches on them)",
                column=", ".join(self.keys),
                bad_rows=rows,
            )
        if null_texts:
            log.info(
                "%d row(s) have a NULL %s: their predictions are NULL",
                null_texts,
                self.cfg.text_column,
            )
        return total

    def _select(self) -> str:
        keys = ", ".join(f'{k} AS "K{i}"' for i, k in enumerate(self._quoted_keys))
        return (
            f'SELECT {keys}, CAST({self._text} AS VARCHAR) AS "{TEXT_ALIAS}" '
            f"FROM {self.relation} ORDER BY {self._order}"
        )

    def batches(self, start: int, batch_rows: int) -> tuple[int, Iterator[pa.Table]]:
        """(rows in the result, its rows from ``start`` on in tables of ``batch_rows``): the
        key columns under their names, then the text as ``TEXT_ALIAS``."""
        cur = self._conn.select(self._select(), self._params, what="input query")
        result = cur.get_result_batches() or []
        total = sum(int(b.rowcount) for b in result)
        names = [*self.keys, TEXT_ALIAS]

        def tables() -> Iterator[pa.Table]:
            for table in rows_in_range(result, start, total, batch_rows):
                yield table.rename_columns(names)

        return total, _downloads(tables(), self._conn.secrets())
