"""The embedded Snowflake of local mode: a fakesnow server in a child process, seeded with the
example tables shipped in ``snowtrain/cli/examples``.

Why a child process: the trainer is a separate process that talks to Snowflake over the
connector's HTTP protocol exactly as it does in a pod, so the emulator must be a real server on
a port, and its lifetime must end with the CLI's (``stop`` terminates it; a crash of the CLI
closes its stdin pipe and the child exits on its own).

The child (``python -m snowtrain.cli.emulator``) starts the server on 127.0.0.1, loads every
example table (parquet PUT + COPY INTO, the fast path), then prints one JSON line
``{"port": P, "tables": {...}}`` and waits until stdin closes or it is terminated.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: Table name -> shipped file (see examples/generate.py for what the rows are).
EXAMPLE_TABLES = {
    "SENTIMENT": "sentiment.csv.gz",
    "PROMPT_COMPLETION": "prompt_completion.csv.gz",
    "CORPUS": "corpus.csv.gz",
}
DEFAULT_DATABASE = "SNOWTRAIN"
DEFAULT_SCHEMA = "PUBLIC"
#: Any credentials log in to the emulator; these are placeholders, not secrets.
DUMMY_USER = "snowtrain"
DUMMY_PASSWORD = "local-emulator"
DUMMY_ACCOUNT = "local"


def _sql_type(arrow_type: Any) -> str:
    import pyarrow as pa

    return "NUMBER" if pa.types.is_integer(arrow_type) else "VARCHAR"


def seed(
    conn: Any, database: str, schema: str, tables: dict[str, str] | None = None
) -> dict[str, int]:
    """Create ``database.schema`` and load the example tables into it; return row counts.

    ``database``/``schema`` are plain identifiers chosen by the job's YAML (validated by the
    API's identifier pattern before they get here) or the defaults.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    cur = conn.cursor()
    cur.execute(f'CREATE DATABASE IF NOT EXISTS "{database}"')
    cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{database}"."{schema}"')
    cur.execute(f'USE SCHEMA "{database}"."{schema}"')
    cur.execute("CREATE STAGE IF NOT EXISTS SNOWTRAIN_SEED")
    counts = {}
    with tempfile.TemporaryDirectory(prefix="snowtrain-seed-") as tmp:
        for table, filename in (tables or EXAMPLE_TABLES).items():
            data = pacsv.read_csv(EXAMPLES_DIR / filename)
            columns = ", ".join(f'"{f.name}" {_sql_type(f.type)}' for f in data.schema)
            cur.execute(f'CREATE OR REPLACE TABLE "{table}" ({columns})')
            parquet = Path(tmp) / f"{table.lower()}.parquet"
            pq.write_table(data, parquet)
            cur.execute(f"PUT 'file://{parquet}' @SNOWTRAIN_SEED/{table.lower()}")
            cur.execute(
                f'COPY INTO "{table}" FROM @SNOWTRAIN_SEED/{table.lower()} '
                "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
            )
            counts[table] = data.num_rows
    return counts


@dataclass
class Emulator:
    """A running embedded Snowflake; ``env`` is what the trainer needs to reach it."""

    process: subprocess.Popen
    port: int
    database: str
    schema: str
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Connection settings for the trainer (README: "The trainer contract", credentials). Dummy credentials only."""
        return {
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(self.port),
            "SNOWFLAKE_PROTOCOL": "http",
            "SNOWFLAKE_ACCOUNT": DUMMY_ACCOUNT,
            "SNOWFLAKE_USER": DUMMY_USER,
            "SNOWFLAKE_PASSWORD": DUMMY_PASSWORD,
            "SNOWFLAKE_DATABASE": self.database,
            "SNOWFLAKE_SCHEMA": self.schema,
        }

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child and wait for it; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin:
            self.process.stdin.close()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmulatorError(RuntimeError):
    """The emulator did not start; the message points at its log."""


def start(
    database: str = DEFAULT_DATABASE,
    schema: str = DEFAULT_SCHEMA,
    *,
    log_path: Path | None = None,
    timeout: float = 120.0,
) -> Emulator:
    """Start and seed the emulator in a child process; return once its tables are loaded."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snowtrain.cli.emulator",
            "--database",
            database,
            "--schema",
            schema,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    if log_path:
        log.close()  # type: ignore[union-attr]
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    try:
        info = json.loads(line)
    except json.JSONDecodeError:
        proc.kill()
        proc.wait()
        where = f"; see {log_path}" if log_path else ""
        raise EmulatorError(f"the embedded Snowflake emulator did not start{where}") from None
    return Emulator(proc, int(info["port"]), database, schema, info.get("tables", {}))


def _serve(database: str, schema: str) -> int:
    """Child side: run the server, seed it, report the port, wait for the parent."""
    import fakesnow
    import snowflake.connector

    # uvicorn writes its access log to stdout: keep the real stdout for the one ready line and
    # point file descriptor 1 at stderr (the parent's log file).
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fakesnow.server(host="127.0.0.1") as kwargs:
        conn = snowflake.connector.connect(
            **{**kwargs, "user": DUMMY_USER, "password": DUMMY_PASSWORD, "account": DUMMY_ACCOUNT}
        )
        try:
            counts = seed(conn, database, schema)
        finally:
            conn.close()
        report.write(json.dumps({"port": kwargs["port"], "tables": counts}) + "\n")
        report.flush()

        def _watch_parent() -> None:
            # EOF on stdin: the parent is gone (even after SIGKILL); do not outlive it.
            sys.stdin.read()
            stop.set()

        threading.Thread(target=_watch_parent, daemon=True).start()
        while not stop.wait(0.5):
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--schema", default=DEFAULT_SCHEMA)
    args = parser.parse_args(argv)
    return _serve(args.database, args.schema)


if __name__ == "__main__":
    sys.exit(main())
