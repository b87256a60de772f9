"""Stream a Snowflake table or query as Arrow batches, checked before training starts.

``profile`` runs a few aggregate queries up front so bad data (a missing column, no rows,
NULLs, one label class, non-text prompts) fails in seconds with a ``DataError`` instead of
hours into training. ``iter_batches`` streams with ``fetch_arrow_batches`` and re-slices to
``batch_rows``, so the trainer holds one batch at a time however large the table.

Determinism: rows are read ``ORDER BY HASH(role columns), role columns`` so ``maxRows`` picks
the same rows every run and a resumed run sees the same order; the validation split hashes the
text (or prompt) of each row, so the same row lands in the same split in every run and
identical texts never straddle the split. One query serves both splits: the training pass
spills the held-out rows to a local parquet file that the validation pass then reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from snowflake.connector import errors as sf_errors
from snowflake.connector.constants import FIELD_ID_TO_NAME

from snowtrain.api.kinds import TASK_COLUMNS
from snowtrain.api.trainer_config import TrainerDataConfig

from ..errors import DataError, InvalidConfig, Unavailable
from .connection import connect, describe_error, execute, is_transient
from .credentials import Credentials, load_credentials
from .profile import DataFingerprint, DataProfile
from .sql import column_ref, subquery, table_ref

Split = Literal["train", "validation"]
#: Roles whose column must be text (labels may be any scalar: they are cast to VARCHAR).
TEXT_ROLES = ("text", "prompt", "completion")
#: More distinct labels than this is not a classification problem we train.
MAX_LABELS = 10_000
_SPLIT_BUCKETS = 1_000_000


def row_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 64-bit hash per value (pandas' SipHash with its fixed key: same across runs)."""
    return pd.util.hash_array(column.to_numpy(zero_copy_only=False), categorize=False)


def _in_background(fn: Callable[[], Any], name: str) -> Future[Any]:
    """Run ``fn`` on a daemon thread; its result or exception arrives in the Future.

    Not an executor: its worker threads are joined at interpreter exit, so a preempted
    trainer would wait for a query it no longer needs; a daemon thread ends with the process.
    """
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # delivered to whoever takes the result
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def held_out(key_hashes: np.ndarray, fraction: float) -> np.ndarray:
    """True for rows held out for validation: a fixed fraction of the hash space of the key."""
    return (key_hashes % _SPLIT_BUCKETS) < round(fraction * _SPLIT_BUCKETS)


class SnowflakeSource:
    """The training (and validation) rows of one trainer config, read from Snowflake.

    Names are validated and quoted on construction, so a table name carrying SQL is refused
    before any connection or query. ``connection`` lets a caller share an open connection
    (it is then not closed here); otherwise one is opened lazily from ``credentials`` or from
    the environment / ``credentialsDir``.
    """

    def __init__(
        self,
        cfg: TrainerDataConfig,
        *,
        credentials: Credentials | None = None,
        connection: Any | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        if bool(cfg.table) == bool(cfg.query):
            raise InvalidConfig("data: set exactly one of table or query")
        if not cfg.columns:
            raise InvalidConfig("data.columns is empty")
        self.cfg = cfg
        self._from = table_ref(cfg.table) if cfg.table else subquery(cfg.query or "")
        val = cfg.validation
        self._val_from: str | None = None
        if val.table:
            self._val_from = table_ref(val.table)
        elif val.query:
            self._val_from = subquery(val.query)
        self.roles: list[str] = list(cfg.columns)
        self._names = dict(cfg.columns)
        self._quoted = {role: column_ref(name) for role, name in cfg.columns.items()}
        self._credentials = credentials
        self._env = env
        self._conn = connection
        self._owns_conn = connection is None
        self._fingerprint: DataFingerprint | None = None
        self._validation_rows: int | None = None
        self._spill_dir: Path | None = None
        self._spill_file: Path | None = None
        self._early_query: Future[Any] | None = None

    # -- connection -------------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        return self._credentials.secret_values() if self._credentials else []

    def _connection(self) -> Any:
        if self._conn is None:
            if self._credentials is None:
                self._credentials = load_credentials(self.cfg.snowflake, self._env)
            self._conn = connect(self.cfg.snowflake, self._credentials)
        return self._conn

    def _reconnect(self, _exc: BaseException) -> None:
        """After a transient error: drop our own connection so the retry logs in afresh."""
        if not self._owns_conn or self._conn is None:
            return
        with contextlib.suppress(Exception):  # a dead connection may fail to close
            self._conn.close()
        self._conn = None

    def _run(self, sql: str, params: tuple[Any, ...] = (), what: str = "query") -> Any:
        """Execute with retries; map the connector's errors to the trainer's.

        Every statement here is one SELECT that may carry the user's query, so each goes with
        the connector's single-statement guard (``num_statements=1``): should a second
        statement ever get past ``check_query``, Snowflake refuses the request.
        """
        return execute(
            lambda: self._connection().cursor(),
            sql,
            params,
            retries=self.cfg.snowflake.retries,
            what=what,
            secrets=self._secrets(),
            on_retry=self._reconnect,
            not_found=lambda detail: DataError(
                f"{what}: the data does not exist or is not authorized: {detail}"
            ),
            num_statements=1,
        )

    def start_training_query(self) -> None:
        """Submit the training pass's query now, on a thread; the next ``train`` pass reads it.

        The trainer calls this before it loads the base model: a warehouse may take as long
        to sort a large table as the node takes to read a large checkpoint, and neither needs
        to wait for the other. Its errors surface where they always have, in
        ``iter_batches("train")``, and a SIGTERM meanwhile still stops the trainer at once.
        """
        if self._early_query is None:
            sql, params = self._select(self._from, ordered=True)
            self._early_query = _in_background(
                lambda: self._run(sql, params, what="data query"), name="snowtrain-data-query"
            )

    def close(self) -> None:
        """Close our own connection and delete the validation spill."""
        self._early_query = None  # a query still running ends with the connection
        if self._owns_conn and self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = self._spill_file = None

    def __enter__(self) -> SnowflakeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SQL --------------------------------------------------------------------------------

    def _select(self, src: str, *, ordered: bool) -> tuple[str, tuple[Any, ...]]:
        """Role columns aliased C0..Cn (labels cast to text), optionally ordered and limited."""
        exprs = []
        for i, role in enumerate(self.roles):
            col = self._quoted[role]
            expr = f"CAST({col} AS VARCHAR)" if role == "label" else col
            exprs.append(f'{expr} AS "C{i}"')
        sql = f"SELECT {', '.join(exprs)} FROM {src}"
        params: tuple[Any, ...] = ()
        limit = self.cfg.max_rows if src == self._from else None
        if ordered or limit is not None:
            cols = ", ".join(self._quoted[r] for r in self.roles)
            sql += f" ORDER BY HASH({cols}), {cols}"
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return sql, params

    # -- profile ----------------------------------------------------------------------------

    def profile(self, task: str) -> DataProfile:
        """Check the data before training; raise ``DataError`` naming the column and count."""
        needed = TASK_COLUMNS.get(task)
        if needed is None:
            raise InvalidConfig(f"unknown task {task!r}")
        missing_roles = [r for r in needed if r not in self._names]
        if missing_roles:
            raise InvalidConfig(f"data.columns lacks role(s) {missing_roles} for task {task}")
        types = self._column_types(self._from, "data")
        rows = self._check_rows(self._from, types, "data")
        labels = None
        if "label" in self.roles:
            counts = self._label_counts(self._from)
            labels = sorted(counts)
            if len(labels) < 2:
                raise DataError(
                    f"column {self._names['label']} has a single label class {labels!r}: "
                    "classification needs at least two",
                    column=self._names["label"],
                    bad_rows=rows,
                )
        validation_rows = None
        if self._val_from is not None:
            val_types = self._column_types(self._val_from, "validation data")
            validation_rows = self._check_rows(self._val_from, val_types, "validation data")
            if labels is not None:
                unseen = {
                    k: n for k, n in self._label_counts(self._val_from).items() if k not in labels
                }
                if unseen:
                    raise DataError(
                        f"column {self._names['label']}: {sum(unseen.values())} validation row(s) "
                        f"have labels absent from the training data: {sorted(unseen)[:10]}",
                        column=self._names["label"],
                        bad_rows=sum(unseen.values()),
                    )
            self._validation_rows = validation_rows
        return DataProfile(
            rows=rows, validation_rows=validation_rows, labels=labels, column_types=types
        )

    def _column_types(self, src: str, what: str) -> dict[str, str]:
        """Role -> type name; ``DataError`` for a column the result does not have."""
        cur = self._run(f"SELECT * FROM {src} LIMIT 0", what=f"{what} column check")
        found = {d.name: FIELD_ID_TO_NAME[d.type_code] or "UNKNOWN" for d in cur.description}
        types = {}
        for role in self.roles:
            name = self._names[role]
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

    def _check_rows(self, src: str, types: dict[str, str], what: str) -> int:
        """Count rows and NULLs per role column; refuse empty data, NULLs and non-text text."""
        sub, params = self._select(src, ordered=False)
        nulls = ", ".join(f'COUNT(*) - COUNT("C{i}")' for i in range(len(self.roles)))
        cur = self._run(f"SELECT COUNT(*), {nulls} FROM ({sub})", params, what=f"{what} profile")
        total, *null_counts = (int(v) for v in cur.fetchone())
        if total == 0:
            raise DataError(f"{what}: the source returned no rows", bad_rows=0)
        for role, n in zip(self.roles, null_counts, strict=True):
            if n:
                name = self._names[role]
                raise DataError(
                    f"{what}: column {name} ({role}) has {n} NULL value(s) in {total} rows",
                    column=name,
                    bad_rows=n,
                )
        for role in self.roles:
            if role in TEXT_ROLES and types[role] != "TEXT":
                name = self._names[role]
                raise DataError(
                    f"{what}: column {name} ({role}) must be text, found {types[role]} "
                    f"in all {total} rows",
                    column=name,
                    bad_rows=total,
                )
        return total

    def _label_counts(self, src: str) -> dict[str, int]:
        sub, params = self._select(src, ordered=False)
        i = self.roles.index("label")
        cur = self._run(
            f'SELECT "C{i}", COUNT(*) FROM ({sub}) GROUP BY 1 ORDER BY 1 LIMIT {MAX_LABELS + 1}',
            params,
            what="label profile",
        )
        counts = {str(k): int(n) for k, n in cur.fetchall()}
        if len(counts) > MAX_LABELS:
            raise DataError(
                f"column {self._names['label']} has more than {MAX_LABELS} distinct labels",
                column=self._names["label"],
            )
        return counts

    # -- streaming --------------------------------------------------------------------------

    @property
    def _fraction(self) -> float:
        return 0.0 if self._val_from is not None else self.cfg.validation.fraction

    @property
    def _split_key(self) -> str:
        return (
            "prompt"
            if "prompt" in self.roles
            else "text"
            if "text" in self.roles
            else self.roles[0]
        )

    def iter_batches(self, split: Split = "train") -> Iterator[pa.RecordBatch]:
        """Role-named batches of at most ``batch_rows`` rows; label values are strings.

        A full ``train`` pass also records the fingerprint and spills the hashed validation
        rows, which a later ``validation`` pass reads instead of querying again.
        """
        if split == "train":
            yield from self._stream(self._from, keep="train", record=True)
        elif split == "validation":
            if self._val_from is not None:
                yield from self._stream(self._val_from, keep="all", record=False)
            elif self._fraction <= 0:
                return
            elif self._spill_file is not None:
                # pre_buffer would cache every row group read, growing with the file.
                pf = pq.ParquetFile(self._spill_file, pre_buffer=False)
                yield from pf.iter_batches(batch_size=self.cfg.batch_rows)
            else:
                yield from self._stream(self._from, keep="validation", record=False)
        else:
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}")

    def iter_texts(self, limit: int | None = None) -> Iterator[str]:
        """Training texts (prompt and completion for causal-lm), e.g. to train a tokenizer."""
        roles = [r for r in self.roles if r in TEXT_ROLES]
        n = 0
        for batch in self.iter_batches("train"):
            for role in roles:
                for text in batch.column(role).to_pylist():
                    if limit is not None and n >= limit:
                        return
                    yield text
                    n += 1

    @property
    def fingerprint(self) -> DataFingerprint:
        """Rows, query id and content hash of the last complete training pass."""
        if self._fingerprint is None:
            raise RuntimeError("the data fingerprint is known after a full pass over 'train'")
        return self._fingerprint

    def _as_roles(self, table: pa.Table) -> pa.Table:
        """Rename C0..Cn to role names; refuse NULLs and non-text text (defence in depth)."""
        table = table.rename_columns(self.roles)
        for role in self.roles:
            col = table.column(role)
            name = self._names[role]
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

    def _spill(self, writer: pq.ParquetWriter | None, part: pa.Table) -> pq.ParquetWriter:
        if writer is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="snowtrain-validation-"))
            self._spill_file = None
            # Removed on close(), or when the source is garbage-collected without one.
            weakref.finalize(self, shutil.rmtree, self._spill_dir, True)
            writer = pq.ParquetWriter(self._spill_dir / "validation.parquet", part.schema)
        writer.write_table(part)
        return writer

    def _stream(
        self, src: str, *, keep: Literal["train", "validation", "all"], record: bool
    ) -> Iterator[pa.RecordBatch]:
        if keep == "train" and self._early_query is not None:
            early, self._early_query = self._early_query, None
            cur = early.result()
        else:
            sql, params = self._select(src, ordered=True)
            cur = self._run(sql, params, what="data query")
        query_id = getattr(cur, "sfqid", None)
        fraction = self._fraction if keep != "all" else 0.0
        sha = hashlib.sha256()
        kept = n_held_out = 0
        writer: pq.ParquetWriter | None = None
        spill = record and fraction > 0
        if spill and self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = self._spill_file = None
        try:
            for chunk in self._fetch(cur):
                table = self._as_roles(chunk)
                hashes = np.stack([row_hashes(table.column(r)) for r in self.roles], axis=1)
                sha.update(np.ascontiguousarray(hashes).tobytes())
                if fraction > 0:
                    is_val = held_out(hashes[:, self.roles.index(self._split_key)], fraction)
                    val_part = table.filter(pa.array(is_val))
                    n_held_out += val_part.num_rows
                    if spill and val_part.num_rows:
                        writer = self._spill(writer, val_part)
                    table = table.filter(pa.array(~is_val)) if keep == "train" else val_part
                kept += table.num_rows
                yield from table.to_batches(max_chunksize=self.cfg.batch_rows)
        finally:
            if writer is not None:
                writer.close()
        if spill and self._spill_dir is not None:
            self._spill_file = self._spill_dir / "validation.parquet"
        if record:
            val_rows = n_held_out if self._val_from is None else (self._validation_rows or 0)
            self._fingerprint = DataFingerprint(
                rows=kept,
                validation_rows=val_rows,
                query_id=query_id,
                content_sha256=sha.hexdigest(),
            )
        elif keep == "all":
            self._validation_rows = kept
            if self._fingerprint is not None:
                self._fingerprint = DataFingerprint(
                    rows=self._fingerprint.rows,
                    validation_rows=kept,
                    query_id=self._fingerprint.query_id,
                    content_sha256=self._fingerprint.content_sha256,
                )

    def _fetch(self, cur: Any) -> Iterator[pa.Table]:
        """Arrow result chunks, re-sliced to ``batch_rows``; a dropped link -> ``Unavailable``."""
        try:
            for table in cur.fetch_arrow_batches():
                for start in range(0, table.num_rows, self.cfg.batch_rows):
                    yield table.slice(start, self.cfg.batch_rows)
        except sf_errors.Error as exc:
            if is_transient(exc):
                raise Unavailable(
                    f"lost Snowflake while streaming: {describe_error(exc, self._secrets())}"
                ) from None
            raise
