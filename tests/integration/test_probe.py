"""The data probe (``python -m snowtrain.probe``) against the Snowflake emulator: the same
data gives the same fingerprint in any process, new rows or a newer value of the trigger's
column change it, and a missing table or column, an unreachable Snowflake or an unreadable
config exit with the trainer's codes and a message naming what is wrong.

Most checks call ``probe`` in-process (the same query and fingerprint, without a Python
start-up each); the exit codes, the termination message and process independence are
checked on the program itself, run as the pod runs it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from snowtrain.api.events import DataProbe
from snowtrain.api.probe_config import ProbeConfig
from snowtrain.probe.run import probe
from snowtrain.trainer.data.connection import LazyConnection
from snowtrain.trainer.data.credentials import load_credentials
from tests.integration.trainer_run import TrainerRun, finish, start_trainer, trainer_env

pytestmark = pytest.mark.snowflake

PROBE = "snowtrain.probe"
T0 = dt.datetime(2024, 5, 1, 6, 0, 0)
_runs = itertools.count()


def events_table(rows: int) -> pa.Table:
    """(ID, LOADED_AT): one load an hour from ``T0``."""
    return pa.table(
        {
            "ID": pa.array(range(rows), pa.int64()),
            "LOADED_AT": pa.array(
                [T0 + dt.timedelta(hours=i) for i in range(rows)], pa.timestamp("us")
            ),
        }
    )


def config_wire(**fields: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "nightly",
        "snowflake": {"loginTimeoutSeconds": 10, "networkTimeoutSeconds": 60, "retries": 1},
        "table": "EVENTS",
        "column": "LOADED_AT",
    }
    config.update(fields)
    return {k: v for k, v in config.items() if v is not None}


def probe_here(db: Any, **fields: Any) -> DataProbe:
    """``probe`` in this process, credentials from the emulator's env."""
    wire = config_wire(**fields)
    wire["snowflake"] = db.settings().to_wire()
    config = ProbeConfig.model_validate(wire)
    conn = LazyConnection(config.snowflake, load_credentials(config.snowflake, env=db.env()))
    try:
        return probe(config, conn)
    finally:
        conn.close()


def run_probe(config: dict[str, Any], db: Any, tmp: Path, **env: str) -> TrainerRun:
    """``python -m snowtrain.probe`` as the pod runs it, in a folder of its own (its own
    termination message)."""
    here = tmp / f"run-{next(_runs)}"
    here.mkdir()
    proc = start_trainer(config, trainer_env(db, here, **env), here, module=PROBE)
    return finish(proc, here, timeout=120)


def assert_no_secret(run: TrainerRun, db: Any) -> None:
    for text in (run.stdout, run.stderr, json.dumps(run.termination)):
        assert db.password not in text


def test_same_data_same_fingerprint_in_every_process(snowflake_db: Any, tmp_path: Path) -> None:
    snowflake_db.seed_table("EVENTS", events_table(5))
    first = run_probe(config_wire(), snowflake_db, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # The second pod reads its credentials from a mounted Secret instead of the env.
    secret = tmp_path / "secret"
    secret.mkdir()
    for key, var in [
        ("account", "SNOWFLAKE_ACCOUNT"),
        ("user", "SNOWFLAKE_USER"),
        ("password", "SNOWFLAKE_PASSWORD"),
        ("host", "SNOWFLAKE_HOST"),
        ("port", "SNOWFLAKE_PORT"),
        ("protocol", "SNOWFLAKE_PROTOCOL"),
    ]:
        (secret / key).write_text(snowflake_db.env()[var])
    second = run_probe(
        config_wire(snowflake={**config_wire()["snowflake"], "credentialsDir": str(secret)}),
        snowflake_db,
        tmp_path,
        SNOWFLAKE_PASSWORD="",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    for run in (first, second):
        assert run.termination is not None
        assert run.termination["outcome"] == "Succeeded"
        assert run.termination["exitCode"] == 0
        assert run.of("done")[-1]["probe"] == run.termination["probe"]
        assert_no_secret(run, snowflake_db)
    found = first.termination["probe"]  # type: ignore[index]
    assert found["rows"] == 5
    assert found["newest"] == "2024-05-01T10:00:00"
    assert len(found["fingerprint"]) == 64
    assert second.termination["probe"] == found  # type: ignore[index]
    # ... and this process (another interpreter, another hash seed) agrees.
    assert probe_here(snowflake_db).fingerprint == found["fingerprint"]


def test_new_rows_change_the_fingerprint(snowflake_db: Any) -> None:
    snowflake_db.seed_table("EVENTS", events_table(5))
    before = probe_here(snowflake_db)
    assert probe_here(snowflake_db) == before
    snowflake_db.execute(
        "INSERT INTO EVENTS (ID, LOADED_AT) VALUES (?, ?)", (5, T0 + dt.timedelta(hours=5))
    )
    after = probe_here(snowflake_db)
    assert (after.rows, after.newest) == (6, "2024-05-01T11:00:00")
    assert after.fingerprint != before.fingerprint


def test_a_newer_value_changes_it_when_the_count_stays(snowflake_db: Any) -> None:
    """A load that replaces one row by one keeps COUNT(*); the column's MAX tells."""
    snowflake_db.seed_table("EVENTS", events_table(5))
    before = probe_here(snowflake_db)
    count_only = probe_here(snowflake_db, column=None)
    snowflake_db.execute("DELETE FROM EVENTS WHERE ID = 0")
    snowflake_db.execute(
        "INSERT INTO EVENTS (ID, LOADED_AT) VALUES (?, ?)", (100, T0 + dt.timedelta(days=1))
    )
    after = probe_here(snowflake_db)
    assert after.rows == before.rows == 5
    assert after.newest == "2024-05-02T06:00:00"
    assert after.fingerprint != before.fingerprint
    # Without a column the probe sees only the count, which did not move.
    assert probe_here(snowflake_db, column=None) == count_only
    assert count_only.newest is None


def test_a_query_source(snowflake_db: Any) -> None:
    snowflake_db.seed_table("EVENTS", events_table(5))
    query = "SELECT ID, LOADED_AT FROM EVENTS WHERE ID < 3"
    found = probe_here(snowflake_db, table=None, query=query)
    assert (found.rows, found.newest) == (3, "2024-05-01T08:00:00")
    assert found.fingerprint != probe_here(snowflake_db).fingerprint
    # Comments and a trailing ";" are not the query: the same statement, the same print.
    again = probe_here(snowflake_db, table=None, query=f"-- recent loads\n{query};\n")
    assert again == found
    # An empty result: no newest value.
    empty = probe_here(snowflake_db, table=None, query="SELECT * FROM EVENTS WHERE ID < 0")
    assert (empty.rows, empty.newest) == (0, None)


def test_a_missing_table_is_a_data_error_naming_it(snowflake_db: Any, tmp_path: Path) -> None:
    run = run_probe(config_wire(table="NO_SUCH_TABLE"), snowflake_db, tmp_path)
    assert run.returncode == 65, run.stderr[-3000:]
    term = run.termination
    assert term is not None
    assert (term["outcome"], term["reason"], term["exitCode"]) == ("Failed", "DataError", 65)
    assert "table NO_SUCH_TABLE does not exist" in term["message"]
    assert "probe" not in term
    assert_no_secret(run, snowflake_db)


def test_a_missing_column_is_a_data_error_naming_it(snowflake_db: Any, tmp_path: Path) -> None:
    snowflake_db.seed_table("EVENTS", events_table(3))
    run = run_probe(config_wire(column="UPDATED_AT"), snowflake_db, tmp_path)
    assert run.returncode == 65, run.stderr[-3000:]
    term = run.termination
    assert term is not None and term["reason"] == "DataError"
    assert "column UPDATED_AT does not exist in table EVENTS" in term["message"]
    assert_no_secret(run, snowflake_db)


def test_unreachable_snowflake_is_unavailable(snowflake_db: Any, tmp_path: Path) -> None:
    config = config_wire(
        snowflake={"loginTimeoutSeconds": 2, "networkTimeoutSeconds": 2, "retries": 0}
    )
    run = run_probe(config, snowflake_db, tmp_path, SNOWFLAKE_PORT="9")
    assert run.returncode == 69, run.stderr[-3000:]
    assert run.termination is not None and run.termination["reason"] == "Unavailable"
    assert_no_secret(run, snowflake_db)


def test_an_unreadable_config_is_an_invalid_spec(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"name": "nightly", "table": ')
    term_path = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", PROBE, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TERMINATION_MESSAGE_PATH": str(term_path)},
    )
    assert done.returncode == 64, done.stderr[-3000:]
    term = json.loads(term_path.read_text())
    assert (term["reason"], term["exitCode"]) == ("InvalidSpec", 64)
    assert "not valid JSON" in term["message"]
