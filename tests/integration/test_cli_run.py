"""`snowtrain run` end to end: the example YAML, the embedded Snowflake emulator, the real
trainer on a tiny model, the real server, a real prediction over HTTP.

Only the base model is swapped (the tiny 2-layer classifier of tests/fixtures/models.py instead
of MiniLM) and the steps are capped, so the run takes seconds; everything else is the example
manifest as shipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from snowtrain.cli import emulator
from snowtrain.cli.serving import free_port, port_is_free

ROOT = Path(__file__).resolve().parents[2]
FINETUNE = ROOT / "manifests" / "examples" / "finetune.yaml"
LABELS = {"negative", "neutral", "positive"}


@pytest.fixture(autouse=True)
def ctrl_c_reaches_the_cli():
    """The tests press Ctrl-C (SIGINT) as a user would. A test run started in the background
    (`cmd &` without job control, nohup) inherits SIGINT ignored, and so would every CLI it
    starts: restore Python's own handling here, so the CLI starts with SIGINT live."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _cli_env(tmp_path: Path) -> dict[str, str]:
    """No Snowflake credentials anywhere: local mode must pick the embedded emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")}
    env["SNOWFLAKE_HOME"] = str(tmp_path / "no-snowflake-config")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _tiny_job(tmp_path: Path, base_model: Path, **training) -> Path:
    job = yaml.safe_load(FINETUNE.read_text())
    job["spec"]["baseModel"] = {"uri": str(base_model)}
    job["spec"]["data"]["maxRows"] = 400
    job["spec"]["training"].update(
        {"maxSteps": 6, "batchSize": 8, "maxSeqLength": 32, "checkpoint": {"everySteps": 3}}
        | training
    )
    path = tmp_path / "finetune-tiny.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _run(args: list[str], env: dict[str, str], timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snowtrain.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.snowflake
def test_emulator_serves_the_example_tables(tmp_path):
    import snowflake.connector

    with emulator.start("DEMO", "DATA", log_path=tmp_path / "emu.log") as emu:
        assert emu.tables == {"SENTIMENT": 3000, "PROMPT_COMPLETION": 1500, "CORPUS": 3000}
        env = emu.env
        conn = snowflake.connector.connect(
            host=env["SNOWFLAKE_HOST"],
            port=int(env["SNOWFLAKE_PORT"]),
            protocol=env["SNOWFLAKE_PROTOCOL"],
            account=env["SNOWFLAKE_ACCOUNT"],
            user=env["SNOWFLAKE_USER"],
            password=env["SNOWFLAKE_PASSWORD"],
            database="DEMO",
            schema="DATA",
        )
        cur = conn.cursor()
        cur.execute("SELECT LABEL, COUNT(*) FROM SENTIMENT GROUP BY LABEL ORDER BY LABEL")
        assert {label for label, _ in cur.fetchall()} == LABELS
        conn.close()
    # Stopped with the context: no server left behind.
    assert emu.process.poll() is not None
    assert port_is_free(emu.port)


@pytest.mark.slow
@pytest.mark.snowflake
def test_run_trains_serves_and_answers(tmp_path, tiny_classifier_dir):
    env = _cli_env(tmp_path)
    job = _tiny_job(tmp_path, tiny_classifier_dir)
    run_dir = tmp_path / "run"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snowtrain.cli",
            "run",
            str(job),
            "--output",
            str(run_dir),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 420
    base_url = None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if match := re.match(r"Serving sentiment-minilm at (http://\S+)", line):
                base_url = match.group(1)
            if line.startswith("curl -s"):  # printed once the server is ready
                break
        text = "".join(output)
        assert base_url == f"http://127.0.0.1:{port}", text
        assert "embedded Snowflake emulator" in text
        assert "SENTIMENT (3000 rows)" in text
        assert "curl -s" in text and ":predict" in text

        body = json.dumps({"instances": ["The delivery was late and the box was crushed."]})
        request = urllib.request.Request(
            f"{base_url}/v1/models/sentiment-minilm:predict",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
        assert answer["predictions"][0]["label"] in LABELS
    finally:
        # Ctrl-C, as a user stops the server: the CLI stops it and exits cleanly.
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(output) + rest
    assert port_is_free(port)

    model = run_dir / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "snowtrain.json",
        "metrics.json",
        "loss_curve.png",
    ):
        assert (model / name).is_file(), name
    assert (model / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "wall time" in "".join(output) + rest
    # What the trainer ran with is the operator's config, and it holds no credential.
    config = (run_dir / "trainer-config.json").read_text()
    assert emulator.DUMMY_PASSWORD not in config
    assert emulator.DUMMY_PASSWORD not in (run_dir / "trainer.log").read_text()

    # Rerun with --demo: the model is already trained, so it serves and predicts at once.
    again = _run(
        ["run", str(job), "--output", str(run_dir), "--port", str(free_port()), "--demo"], env
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Already trained" in again.stdout
    assert "Training" not in again.stdout.replace("Already trained", "")
    prediction = json.loads(again.stdout[again.stdout.index("{\n") :])
    assert prediction["predictions"][0]["label"] in LABELS


@pytest.mark.slow
@pytest.mark.snowflake
def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, tiny_classifier_dir):
    """Ctrl-C during training: the trainer checkpoints (SIGTERM, as on preemption) and the same
    command resumes from that step instead of starting over."""
    env = _cli_env(tmp_path)
    # Checkpoints only on preemption, so the resumed step proves the SIGTERM path.
    job = _tiny_job(tmp_path, tiny_classifier_dir, maxSteps=40, checkpoint={"everySteps": 1000})
    run_dir = tmp_path / "run"
    args = ["run", str(job), "--output", str(run_dir), "--no-serve"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "snowtrain.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    events = run_dir / "events.jsonl"
    deadline = time.monotonic() + 300
    # The start event comes once the trainer is in its training phase.
    while time.monotonic() < deadline and proc.poll() is None:
        if events.exists() and '"start"' in events.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "Run the same command again to resume" in out
    stopped = [json.loads(line) for line in events.read_text().splitlines()]
    checkpoint = next(e for e in stopped if e["event"] == "checkpoint")
    assert 0 < checkpoint["step"] < 40

    again = _run(args, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Resuming from the checkpoint at step {checkpoint['step']}" in again.stdout
    assert json.loads((run_dir / "model" / "metrics.json").read_text())["steps"] == 40
    assert (run_dir / "model" / "loss_curve.png").is_file()


@pytest.mark.slow
@pytest.mark.snowflake
def test_missing_table_fails_with_the_trainers_reason(tmp_path, tiny_classifier_dir):
    job = yaml.safe_load(_tiny_job(tmp_path, tiny_classifier_dir).read_text())
    job["spec"]["data"]["table"] = "REVIEWS"
    path = tmp_path / "reviews.yaml"
    path.write_text(yaml.safe_dump(job))
    result = _run(
        ["run", str(path), "--output", str(tmp_path / "run"), "--no-serve"], _cli_env(tmp_path)
    )
    assert result.returncode not in (0, 2), result.stdout
    assert "not one of the example tables" in result.stdout
    assert "Training failed" in result.stdout
    assert "REVIEWS" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["snowflake-secret.yaml", "finetune.yaml", "pretrain.yaml"])
def test_examples_are_accepted_by_a_real_apiserver(kubectl, namespace, name):
    """The same files local mode runs are valid for the cluster (CRD schema, server-side)."""
    path = ROOT / "manifests" / "examples" / name
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout


@pytest.mark.snowflake
def test_run_a_batch_prediction_scores_the_example_table(tmp_path, tiny_classifier_dir):
    """`snowtrain run batch.yaml`: the example BatchPrediction with a model directory, against
    the embedded emulator: every row of SENTIMENT scored, a sample of the output shown."""
    job = yaml.safe_load((ROOT / "manifests/examples/batch-prediction.yaml").read_text())
    job["spec"]["model"] = {"uri": str(tiny_classifier_dir)}
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump(job))
    run_dir = tmp_path / "run"
    result = _run(["run", str(path), "--output", str(run_dir)], _cli_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Embedded Snowflake" in output and "SENTIMENT_SCORED" in output
    summary = json.loads((run_dir / "termination.json").read_text())
    assert summary["predictions"]["rowsDone"] == summary["predictions"]["rowsTotal"] == 3000
    config = json.loads((run_dir / "predictor-config.json").read_text())
    assert config["modelDir"] == str(tiny_classifier_dir)
    assert re.search(r"│ 1\s+│ (negative|neutral|positive)\s+│ 0\.\d{4}", output), output[-2000:]


def test_run_a_batch_prediction_before_its_model_says_what_to_train(tmp_path):
    example = ROOT / "manifests/examples/batch-prediction.yaml"
    # From an empty folder: the referenced job's model is looked for under ./snowtrain-runs.
    result = subprocess.run(
        [sys.executable, "-m", "snowtrain.cli", "run", str(example)],
        capture_output=True, text=True, env=_cli_env(tmp_path), timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "FineTuneJob sentiment-minilm has no model here yet" in message
    assert "snowtrain run" in message
