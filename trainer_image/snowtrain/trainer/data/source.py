"""Stream a Snowflake table or query as Arrow batches, checked before training starts.

``SnowflakeSource`` is what the trainer reads its rows through: ``profile`` checks the data
up front (``profile.py``), and ``iter_batches`` streams it with ``fetch_arrow_batches``,
re-sliced to ``batch_rows``, so the trainer holds one batch at a time however large the
table. The parts live next to it: ``connection.py`` logs in and retries, ``columns.py`` turns
roles into SQL and back, ``split.py`` holds the hashed validation split, the fingerprint and
the spill that lets one query serve both splits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Literal

import pyarrow as pa
from snowflake.connector import errors as sf_errors

from snowtrain.api.trainer_config import TrainerDataConfig

from .. import stop_requests
from ..errors import InvalidConfig, Unavailable
from .columns import TEXT_ROLES, Columns, Rows
from .connection import LazyConnection, describe_error, is_transient
from .credentials import Credentials
from .profile import DataProfile, profile_data
from .shard import Shard, rows_in_range
from .split import ContentHash, DataFingerprint, ValidationSpill, held_out
from .sql import subquery, table_ref

Split = Literal["train", "validation"]


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


def _fetch(cur: Any, batch_rows: int, secrets: list[str]) -> Iterator[pa.Table]:
    """Arrow result chunks, re-sliced to ``batch_rows``; a dropped link -> ``Unavailable``."""

    def sliced() -> Iterator[pa.Table]:
        for table in cur.fetch_arrow_batches():
            for start in range(0, table.num_rows, batch_rows):
                yield table.slice(start, batch_rows)

    return _downloads(sliced(), secrets)


def _downloads(tables: Iterator[pa.Table], secrets: list[str]) -> Iterator[pa.Table]:
    """``tables`` as they download; a dropped link -> ``Unavailable``."""
    try:
        yield from tables
    except sf_errors.Error as exc:
        if is_transient(exc):
            raise Unavailable(
                f"lost Snowflake while streaming: {describe_error(exc, secrets)}"
            ) from None
        raise


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
        shard: Shard | None = None,
    ) -> None:
        if bool(cfg.table) == bool(cfg.query):
            raise InvalidConfig("data: set exactly one of table or query")
        if not cfg.columns:
            raise InvalidConfig("data.columns is empty")
        self.cfg = cfg
        source = table_ref(cfg.table) if cfg.table else subquery(cfg.query or "")
        self._train = Rows(source, cfg.max_rows)
        val = cfg.validation
        val_source = (
            table_ref(val.table) if val.table else subquery(val.query) if val.query else None
        )
        # A validation source naming the training relation is read with its row cap too.
        self._validation = (
            None
            if val_source is None
            else Rows(val_source, cfg.max_rows if val_source == source else None)
        )
        self._columns = Columns(cfg.columns)
        self.roles: list[str] = self._columns.roles
        self._conn = LazyConnection(cfg.snowflake, credentials, shared=connection, env=env)
        self._fingerprint: DataFingerprint | None = None
        self._validation_rows: int | None = None
        self._spill = ValidationSpill()
        self._early_query: Future[Any] | None = None
        self.shard = shard if shard is not None and shard.ranks > 1 else None
        """Several ranks: each reads its share of every pass (``shard.py``)."""

    def start_training_query(self) -> None:
        """Submit the training pass's query now, on a thread; the next ``train`` pass reads it.

        The trainer calls this before it loads the base model: a warehouse may take as long
        to sort a large table as the node takes to read a large checkpoint, and neither needs
        to wait for the other. Its errors surface where they always have, in
        ``iter_batches("train")``, and a SIGTERM meanwhile still stops the trainer at once.
        """
        if self.shard is not None and self.shard.rank != 0:
            return  # rank 0 runs the query for all
        if self._early_query is None:
            sql, params = self._columns.select(self._train, ordered=True)
            self._early_query = _in_background(
                lambda: self._conn.select(sql, params, what="data query"),
                name="snowtrain-data-query",
            )

    def close(self) -> None:
        """Close our own connection and delete the validation spill."""
        self._early_query = None  # a query still running ends with the connection
        self._conn.close()
        self._spill.discard()

    def __enter__(self) -> SnowflakeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def profile(self, task: str) -> DataProfile:
        """Check the data before training; raise ``DataError`` naming the column and count."""

        def run() -> DataProfile:
            return profile_data(self._conn, self._columns, task, self._train, self._validation)

        found = self.shard.agree(run) if self.shard is not None else run()
        if self._validation is not None:
            self._validation_rows = found.validation_rows
        return found

    @property
    def _fraction(self) -> float:
        return 0.0 if self._validation is not None else self.cfg.validation.fraction

    def iter_batches(self, split: Split = "train") -> Iterator[pa.RecordBatch]:
        """Role-named batches of at most ``batch_rows`` rows; label values are strings.

        A full ``train`` pass also records the fingerprint and spills the hashed validation
        rows, which a later ``validation`` pass reads instead of querying again.
        """
        if split == "train":
            yield from self._stream(self._train, keep="train", record=True)
        elif split == "validation":
            if self._validation is not None:
                yield from self._stream(self._validation, keep="all", record=False)
            elif self._fraction <= 0:
                return
            elif self._spill.sealed:
                yield from self._spill.batches(self.cfg.batch_rows)
            else:
                yield from self._stream(self._train, keep="validation", record=False)
        else:
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}")

    def iter_texts(self, limit: int | None = None) -> Iterator[str]:
        """Training texts (prompt and completion for causal-lm), e.g. to train a tokenizer."""
        roles = [r for r in self.roles if r in TEXT_ROLES]
        n = 0
        # The whole data (a tokenizer is trained on one rank), never one rank's share.
        # Read on the main thread while the connector downloads on its pool: stop_requests.
        batches = self._stream(self._train, keep="train", record=True, whole=True)
        with contextlib.closing(stop_requests.between_items(batches)) as stream:
            for batch in stream:
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

    def _query(self, rows: Rows, keep: str) -> Any:
        """The cursor of a pass's query (the early one for a training pass, if submitted)."""
        if keep == "train" and self._early_query is not None:
            early, self._early_query = self._early_query, None
            return early.result()
        sql, params = self._columns.select(rows, ordered=True)
        return self._conn.select(sql, params, what="data query")

    def _chunks(self, rows: Rows, keep: str, whole: bool) -> tuple[Iterator[pa.Table], Any]:
        """(the pass's Arrow tables, its query id): the whole result, or this rank's rows."""
        secrets = self._conn.secrets()
        if self.shard is None or whole:
            cur = self._query(rows, keep)
            return _fetch(cur, self.cfg.batch_rows, secrets), getattr(cur, "sfqid", None)

        def result() -> tuple[list[Any], Any]:
            cur = self._query(rows, keep)
            return cur.get_result_batches() or [], getattr(cur, "sfqid", None)

        batches, query_id = self.shard.agree(result)
        total = sum(int(b.rowcount) for b in batches)
        start, stop = self.shard.bounds(total)
        return _downloads(
            rows_in_range(batches, start, stop, self.cfg.batch_rows), secrets
        ), query_id

    def _stream(
        self,
        rows: Rows,
        *,
        keep: Literal["train", "validation", "all"],
        record: bool,
        whole: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        chunks, query_id = self._chunks(rows, keep, whole)
        shard = None if whole else self.shard
        fraction = self._fraction if keep != "all" else 0.0
        content = ContentHash(keep=shard is not None)
        key = self.roles.index(self._columns.split_key)
        kept = n_held_out = 0
        spill = record and fraction > 0
        if spill:
            self._spill.discard()
        complete = False
        try:
            for chunk in chunks:
                table = self._columns.as_roles(chunk)
                hashes = content.add(table, self.roles)
                if fraction > 0:
                    is_val = held_out(hashes[:, key], fraction)
                    val_part = table.filter(pa.array(is_val))
                    n_held_out += val_part.num_rows
                    if spill and val_part.num_rows:
                        self._spill.write(val_part)
                    table = table.filter(pa.array(~is_val)) if keep == "train" else val_part
                kept += table.num_rows
                yield from table.to_batches(max_chunksize=self.cfg.batch_rows)
            complete = True
        finally:
            if spill:
                self._spill.end_pass(complete=complete)
        digest = content.hexdigest()
        if shard is not None:  # every rank's counts and row hashes make the whole pass's
            shares = shard.exchange.all_gather((kept, n_held_out))
            kept, n_held_out = sum(s[0] for s in shares), sum(s[1] for s in shares)
            digest = shard.digest(content.part(), ContentHash.of_parts)
        if record:
            val_rows = n_held_out if self._validation is None else (self._validation_rows or 0)
            self._fingerprint = DataFingerprint(
                rows=kept,
                validation_rows=val_rows,
                query_id=query_id,
                content_sha256=digest,
            )
        elif keep == "all":
            self._validation_rows = kept
            if self._fingerprint is not None:
                self._fingerprint = dataclasses.replace(self._fingerprint, validation_rows=kept)
