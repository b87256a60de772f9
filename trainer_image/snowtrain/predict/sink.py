"""Predictions into a Snowflake table, each input row exactly once, whatever kills the pod.

Chunks of answers go to a **staging table** beside the output table (named from the run id,
so every retry of a run finds it): each chunk is written as parquet, PUT to a temporary stage
and loaded with one ``COPY INTO`` (one file: it loads entirely or not at all). Every staged
row carries its position in the key-ordered input (``SNOWTRAIN_ROW``), so a new pod goes on
after the highest position staged, and a chunk loaded twice (a COPY whose answer was lost,
then retried) is counted once when the run ends.

The **output table** changes once, when every row is staged, with a single statement (one
transaction in Snowflake): ``INSERT`` (append), ``INSERT OVERWRITE`` (overwrite) or
``MERGE`` on the keys (upsert). Readers never see half a run. A statement whose answer is
lost is not simply retried: the sink first looks for the run's rows in the output table
(``RUN_ID``), so a retry cannot write them twice. The staging table is dropped last.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from snowtrain.api.batch import (
    CLASSIFIER_COLUMNS,
    COMPLETION_COLUMNS,
    PROVENANCE_COLUMNS,
    PredictionOutput,
)
from snowtrain.trainer.data.connection import (
    LazyConnection,
    execute,
    snowflake_errors,
    with_retries,
)
from snowtrain.trainer.data.sql import table_ref
from snowtrain.trainer.errors import InvalidConfig

from .source import PredictionSource

log = logging.getLogger(__name__)

ROW_COLUMN = "SNOWTRAIN_ROW"
#: Snowflake types of the answer columns: as staged (scores as JSON text), as output.
_STAGED_TYPES = {
    "LABEL": "VARCHAR",
    "SCORE": "FLOAT",
    "SCORES": "VARCHAR",
    "COMPLETION": "VARCHAR",
    "FINISH_REASON": "VARCHAR",
}
_OUTPUT_TYPES = {**_STAGED_TYPES, "SCORES": "VARIANT"}
_PROVENANCE_TYPES = {"MODEL": "VARCHAR", "RUN_ID": "VARCHAR", "PREDICTED_AT": "TIMESTAMP_NTZ"}


def answer_columns(task: str) -> tuple[str, ...]:
    """The columns a model's answers fill: a classifier's or a language model's."""
    return CLASSIFIER_COLUMNS if task == "classification" else COMPLETION_COLUMNS


def _q(name: str) -> str:
    return '"' + name + '"'


class PredictionSink:
    """The output table and the staging table of one run."""

    def __init__(
        self,
        conn: LazyConnection,
        output: PredictionOutput,
        *,
        run_id: str,
        model_name: str,
        task: str,
        source: PredictionSource,
        retries: int,
        workdir: Path | None = None,
    ) -> None:
        self._conn = conn
        self.output = output
        self.run_id = run_id
        self.model_name = model_name
        self._source = source
        self._retries = retries
        self.answers = answer_columns(task)
        self.table = table_ref(output.table)
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:16].upper()
        prefix = self.table.rsplit(".", 1)[0] + "." if "." in self.table else ""
        self.staging = f'{prefix}"SNOWTRAIN_STAGING_{digest}"'
        # A temporary stage beside it: it goes with the session, nothing to clean up.
        self._stage_name = f'{prefix}"SNOWTRAIN_PREDICTIONS"'
        self._stage = f"@{self._stage_name}/{digest}"
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="snowtrain-predict-"))
        self._keys = source.quoted_keys

    # -- statements ---------------------------------------------------------------------------

    def _run(
        self,
        sql: str,
        params: tuple[Any, ...] = (),
        *,
        what: str,
        skip_if: Callable[[], bool] | None = None,
    ) -> Any:
        return execute(
            self._conn.cursor,
            sql,
            params,
            retries=self._retries,
            what=what,
            secrets=self._conn.secrets(),
            on_retry=self._conn.drop,
            num_statements=1,
            skip_if=skip_if,
        )

    # -- the run ------------------------------------------------------------------------------

    def prepare(self) -> int:
        """Create what is missing (output and staging tables); return the rows already staged.

        An output table that exists must have every column the run writes (checked now, so a
        mismatch fails the run before any row is predicted, naming the columns).
        """
        source, params = self._source.relation, self._source.params
        keys = ", ".join(self._keys)
        out_cols = (
            ", ".join(f"CAST(NULL AS {_OUTPUT_TYPES[c]}) AS {_q(c)}" for c in self.answers)
            + ", "
            + ", ".join(f"CAST(NULL AS {t}) AS {_q(c)}" for c, t in _PROVENANCE_TYPES.items())
        )
        self._run(
            f"CREATE TABLE IF NOT EXISTS {self.table} AS SELECT {keys}, {out_cols} "
            f"FROM {source} WHERE 1 = 0",
            params,
            what=f"creation of the output table {self.output.table}",
        )
        columns = [*self._keys, *map(_q, self.answers), *map(_q, PROVENANCE_COLUMNS)]
        try:
            self._run(
                f"SELECT {', '.join(columns)} FROM {self.table} WHERE 1 = 0",
                what=f"column check of the output table {self.output.table}",
            )
        except InvalidConfig as exc:
            raise InvalidConfig(
                f"output.table {self.output.table} exists without the columns this run writes "
                f"({', '.join(c.strip(chr(34)) for c in columns)}): {exc}"
            ) from None
        staged = ", ".join(f"CAST(NULL AS {_STAGED_TYPES[c]}) AS {_q(c)}" for c in self.answers)
        self._run(
            f"CREATE TABLE IF NOT EXISTS {self.staging} AS SELECT {keys}, {staged}, "
            f"CAST(NULL AS NUMBER(38,0)) AS {_q(ROW_COLUMN)} FROM {source} WHERE 1 = 0",
            params,
            what="creation of the staging table",
        )
        return self.rows_staged()

    def rows_staged(self) -> int:
        """The committed prefix of the ordered input: the highest position staged, plus one."""
        cur = self._run(
            f"SELECT COALESCE(MAX({_q(ROW_COLUMN)}) + 1, 0) FROM {self.staging}",
            what="read of the staging table",
        )
        return int(cur.fetchone()[0])

    def staged_keys(self, row: int) -> tuple[Any, ...] | None:
        """The keys staged at position ``row`` (to tell whether the input changed)."""
        cur = self._run(
            f"SELECT {', '.join(self._keys)} FROM {self.staging} WHERE {_q(ROW_COLUMN)} = ? LIMIT 1",
            (row,),
            what="read of the staging table",
        )
        found = cur.fetchone()
        return tuple(found) if found else None

    def restart(self) -> None:
        """Forget what was staged (the input changed under a resumed run)."""
        self._run(f"DELETE FROM {self.staging}", what="reset of the staging table")

    def commit(self, chunk: pa.Table) -> None:
        """Stage one chunk: keys, answers and ``SNOWTRAIN_ROW``, in one parquet file, loaded
        with one COPY (each attempt in a fresh session makes its temporary stage again)."""
        first = int(chunk.column(ROW_COLUMN)[0].as_py())
        path = self._workdir / f"rows-{first:012d}.parquet"
        pq.write_table(chunk, path)
        target = f"{self._stage}/{first:012d}"

        def attempt() -> None:
            cur = self._conn.cursor()
            cur.execute(f"CREATE TEMPORARY STAGE IF NOT EXISTS {self._stage_name}")
            cur.execute(f"PUT 'file://{path}' {target}/ AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
            cur.execute(
                f"COPY INTO {self.staging} FROM {target}/ FILE_FORMAT = (TYPE = PARQUET) "
                "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE"
            )

        what = f"commit of rows from {first}"
        secrets = self._conn.secrets()
        try:
            with snowflake_errors(what, secrets):
                with_retries(
                    attempt,
                    retries=self._retries,
                    what=what,
                    secrets=secrets,
                    on_retry=self._conn.drop,
                )
        finally:
            path.unlink(missing_ok=True)

    def written(self) -> bool:
        """Whether this run's rows are already in the output table (the final write ran)."""
        cur = self._run(
            f'SELECT COUNT(*) FROM {self.table} WHERE "RUN_ID" = ?',
            (self.run_id,),
            what="read of the output table",
        )
        return int(cur.fetchone()[0]) > 0

    def verify(self, total: int) -> None:
        """Every position ``[0, total)`` staged, each at least once: the promise to check
        before the output table changes."""
        cur = self._run(
            f"SELECT COUNT(DISTINCT {_q(ROW_COLUMN)}), MIN({_q(ROW_COLUMN)}), "
            f"MAX({_q(ROW_COLUMN)}) FROM {self.staging}",
            what="check of the staging table",
        )
        distinct, low, high = cur.fetchone()
        if total and (int(distinct) != total or int(low) != 0 or int(high) != total - 1):
            raise RuntimeError(
                f"staging holds {distinct} distinct rows ({low}..{high}) of {total}: not writing"
            )

    def finalize(self) -> None:
        """Write the staged rows to the output table in one statement (once), then drop the
        staging table."""
        answers = [
            f"PARSE_JSON({_q(c)}) AS {_q(c)}" if c == "SCORES" else _q(c) for c in self.answers
        ]
        select = (
            f'SELECT {", ".join(self._keys)}, {", ".join(answers)}, ? AS "MODEL", '
            f'? AS "RUN_ID", CAST(CURRENT_TIMESTAMP() AS TIMESTAMP_NTZ) AS "PREDICTED_AT" '
            f"FROM {self.staging} QUALIFY ROW_NUMBER() OVER "
            f"(PARTITION BY {_q(ROW_COLUMN)} ORDER BY {_q(ROW_COLUMN)}) = 1"
        )
        params = (self.model_name, self.run_id)
        columns = [*self._keys, *map(_q, self.answers), *map(_q, PROVENANCE_COLUMNS)]
        names = ", ".join(columns)
        mode = self.output.mode
        if mode == "append":
            sql = f"INSERT INTO {self.table} ({names}) {select}"
        elif mode == "overwrite":
            sql = f"INSERT OVERWRITE INTO {self.table} ({names}) {select}"
        else:
            on = " AND ".join(f"t.{k} = s.{k}" for k in self._keys)
            rest = [c for c in columns if c not in self._keys]
            sql = (
                f"MERGE INTO {self.table} t USING ({select}) s ON {on} "
                f"WHEN MATCHED THEN UPDATE SET {', '.join(f'{c} = s.{c}' for c in rest)} "
                f"WHEN NOT MATCHED THEN INSERT ({names}) "
                f"VALUES ({', '.join(f's.{c}' for c in columns)})"
            )
        # Must not run twice: a retry first looks for the run's rows (its answer may be lost
        # after it committed).
        self._run(sql, params, what=f"write of the output table ({mode})", skip_if=self.written)
        self.drop_staging()

    def drop_staging(self) -> None:
        self._run(f"DROP TABLE IF EXISTS {self.staging}", what="drop of the staging table")
