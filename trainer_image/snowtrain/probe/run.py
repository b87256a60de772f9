"""The probe program: one config in, one query, one fingerprint out.

The query is ``SELECT COUNT(*), MAX(<column>) FROM <source>`` (just the count without a
column): cheap on purpose, since it runs on every tick of every schedule with a data
trigger, and Snowflake answers both aggregates over a table from its metadata, without
scanning it or needing much of a warehouse. The source is the table or the user's query as a
subquery; the table and the column are validated and quoted as everywhere else in the
trainer (``snowtrain.trainer.data.sql``), the query passes the same read-only check, and
nothing else is pasted into the SQL.

The fingerprint is a sha256 over a canonical JSON of the source (the quoted table reference
or the query's statement), the column, the row count and the newest value as text
(``fingerprint``): the same data gives the same fingerprint in any process, any day, and a
new row or a newer value of the column changes it. A load that replaces rows one for one
keeps the count, which is why the column's newest value (e.g. a ``LOADED_AT``) joins it.

Failures follow the trainer's exit codes: an unreadable config or a bad name is
``INVALID_SPEC`` (64), a table or column that does not exist is ``DATA_ERROR`` (65, the
message naming it), Snowflake out of reach after the retries ``UNAVAILABLE`` (69).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from snowflake.connector import errors as sf_errors

from snowtrain.api.events import DataProbe, TrainerSummary
from snowtrain.api.probe_config import ProbeConfig
from snowtrain.api.query import check_query
from snowtrain.api.trainer_config import ConfigFileError
from snowtrain.trainer.data.connection import (
    LazyConnection,
    describe_error,
    snowflake_errors,
    with_retries,
)
from snowtrain.trainer.data.credentials import load_credentials
from snowtrain.trainer.data.sql import column_ref, subquery, table_ref
from snowtrain.trainer.errors import DataError, InvalidConfig, Preempted
from snowtrain.trainer.progress import Reporter, conclude, failure_of
from snowtrain.trainer.redact import Redactor, setup_logging

log = logging.getLogger("snowtrain.probe")

#: The alias of a query source in the probe's FROM clause.
QUERY_ALIAS = "SNOWTRAIN_PROBE"
#: Snowflake's "invalid identifier" (SQL compilation error 000904): a column that is not
#: there. The shared not-found numbers (``NOT_FOUND_ERRNOS``) cover objects, not columns.
INVALID_IDENTIFIER_ERRNO = 904


def newest_text(value: Any) -> str | None:
    """The newest value as the fingerprint and the summary carry it: ISO 8601 for dates,
    times and timestamps (an aware timestamp in UTC, so the session's time zone does not
    matter), hex for binary, ``str()`` for numbers and text; None stays None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp: dt.datetime = value.astimezone(dt.UTC) if value.tzinfo is not None else value
        return stamp.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def fingerprint(source: str, column: str | None, rows: int, newest: str | None) -> str:
    """sha256 (hex) of the canonical JSON of the four: sorted keys, no spaces, ASCII only,
    so the text -- and the hash -- is the same in every process."""
    payload = {"source": source, "column": column, "rows": rows, "newest": newest}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ProbeTarget:
    """What one config probes, its names validated and quoted (before any query)."""

    source: str
    """The quoted table reference, or the query's statement (the fingerprint's source)."""
    relation: str
    """The FROM clause."""
    column: str | None
    """The trigger's column, canonical spelling (None: the count alone)."""
    described: str
    """The source as messages name it (the table as configured; never the query's text,
    which may hold a literal secret)."""

    @classmethod
    def of(cls, config: ProbeConfig) -> ProbeTarget:
        if bool(config.table) == bool(config.query):
            raise InvalidConfig("probe config: set exactly one of table and query")
        if config.column is not None:
            column_ref(config.column)  # validated now, a bad name is the spec's fault
        if config.table:
            ref = table_ref(config.table)
            return cls(ref, ref, config.column, f"table {config.table}")
        query = config.query or ""
        relation = f"{subquery(query)} AS {QUERY_ALIAS}"  # refuses anything but one SELECT
        return cls(check_query(query), relation, config.column, "the query's data")

    @property
    def sql(self) -> str:
        if self.column is None:
            return f"SELECT COUNT(*) FROM {self.relation}"
        return f"SELECT COUNT(*), MAX({column_ref(self.column)}) FROM {self.relation}"

    def missing(self, conn: LazyConnection, detail: str, retries: int) -> DataError:
        """The ``DataError`` for a probe Snowflake says names something that is not there:
        the column when the source alone reads (a second, empty query tells), else the
        source."""
        if self.column is not None:
            try:
                _one_row(conn, f"SELECT 1 FROM {self.relation} LIMIT 0", retries, "source check")
            except _NotFound:
                pass
            else:
                return DataError(
                    f"column {self.column} does not exist in {self.described} "
                    f"(or is not authorized): {detail}",
                    column=self.column,
                )
        return DataError(f"{self.described} does not exist or is not authorized: {detail}")


class _NotFound(Exception):
    """Snowflake said an object or a column named in the statement is not there."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _one_row(conn: LazyConnection, sql: str, retries: int, what: str) -> Any:
    """The first row of one SELECT (retried as every statement is, with the single-statement
    guard, since it may carry the user's query); ``_NotFound`` when it names something that
    does not exist, the trainer's errors for the rest (``snowflake_errors``)."""
    secrets = conn.secrets()

    def attempt() -> Any:
        cur = conn.cursor()
        cur.execute(sql, (), num_statements=1)
        return cur.fetchone()

    with snowflake_errors(what, secrets, not_found=_NotFound):
        try:
            return with_retries(
                attempt, retries=retries, what=what, secrets=secrets, on_retry=conn.drop
            )
        except sf_errors.ProgrammingError as exc:
            if getattr(exc, "errno", None) == INVALID_IDENTIFIER_ERRNO:
                raise _NotFound(describe_error(exc, secrets)) from None
            raise


def probe(config: ProbeConfig, conn: LazyConnection) -> DataProbe:
    """Count the source's rows and read the column's newest value; return the fingerprint.

    ``InvalidConfig`` for a bad name or query (before any query), ``DataError`` for a table
    or column that does not exist, ``Unavailable`` when Snowflake cannot be reached."""
    target = ProbeTarget.of(config)
    retries = config.snowflake.retries
    try:
        row = _one_row(conn, target.sql, retries, "data probe")
    except _NotFound as exc:
        raise target.missing(conn, exc.detail, retries) from None
    rows = int(row[0] or 0)
    # An empty source has no newest value, whatever the driver makes of MAX's NULL (the
    # emulator returns a NULL timestamp as 1970-01-01).
    newest = newest_text(row[1]) if target.column is not None and rows else None
    return DataProbe(
        rows=rows,
        newest=newest,
        fingerprint=fingerprint(target.source, target.column, rows, newest),
    )


def _stop(signum: int, frame: FrameType | None) -> None:
    # Nothing to keep: the next tick probes again.
    raise Preempted(f"{signal.Signals(signum).name} received during the probe")


def run(config: ProbeConfig) -> int:
    """Probe as configured; return the process exit code (``snowtrain.api.events.ExitCode``)."""
    redactor = setup_logging()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    reporter = Reporter(redactor=redactor)
    found: DataProbe | None = None
    reason: str | None = None
    message: str | None = None
    exit_code = 0
    try:
        credentials = load_credentials(config.snowflake)
        redactor.add(credentials.secret_values())
        conn = LazyConnection(config.snowflake, credentials)
        try:
            found = probe(config, conn)
        finally:
            conn.close()
        log.info(
            "%s: %d rows, newest %s: fingerprint %s",
            config.name,
            found.rows,
            found.newest if config.column else "(no column)",
            found.fingerprint,
        )
    except Exception as exc:
        reason, message, exit_code = failure_of(exc)
    finally:
        summary = TrainerSummary.of_exit(
            exit_code,
            reason=reason,
            message=redactor(message) if message else None,
            probe=found,
        )
        conclude(summary, redactor, reporter)
    return int(exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snowtrain.probe --config FILE``."""
    parser = argparse.ArgumentParser(
        prog="python -m snowtrain.probe",
        description="The data probe of a TrainingSchedule: the source's row count and newest "
        "value, and their fingerprint, in the termination message.",
    )
    parser.add_argument("--config", required=True, help="probe config file (JSON or YAML)")
    args = parser.parse_args(argv)
    try:
        config = ProbeConfig.load(args.config)
    except (OSError, ConfigFileError) as exc:  # neither quotes the file's content
        text = f"cannot read probe config {args.config}: {exc}"
        print(text, file=sys.stderr)
        summary = TrainerSummary.of_exit(
            InvalidConfig.exit_code, reason=InvalidConfig.reason, message=text
        )
        conclude(summary, Redactor())
        return int(InvalidConfig.exit_code)
    return run(config)
