"""Preemption: SIGKILL mid-training then rerun resumes exactly; SIGTERM checkpoints, exits 75.

The trainer is deterministic on CPU (same seed, same permutation per epoch, RNG states in the
checkpoint, one thread), so a resumed run must end with the same metrics as an uninterrupted
one. Stated tolerance: 1e-6 relative (floating-point summation order of the loss sum is the
only expected difference).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.integration.trainer_run import (
    finish,
    minilm_dir,
    run_trainer,
    sentiment_config,
    sentiment_table,
    start_trainer,
    tiny_bert_dir,
    trainer_env,
    wait_for_event,
)

pytestmark = [pytest.mark.slow, pytest.mark.snowflake]
TOLERANCE = 1e-6


def make_config(db, tmp, base):
    return sentiment_config(
        db,
        tmp,
        base,
        training={
            "epochs": 2,
            "batchSize": 8,
            "learningRate": 2e-3,
            "maxSeqLength": 32,
            "evalEverySteps": 20,
            "checkpoint": {"everySteps": 10, "keep": 2},
        },
    )


@pytest.fixture
def seeded(snowflake_db, tmp_path):
    snowflake_db.seed_table("REVIEWS", sentiment_table(300))
    return snowflake_db, tiny_bert_dir(tmp_path / "base")


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(seeded, tmp_path):
    db, base = seeded
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    reference = run_trainer(
        make_config(db, tmp_path / "a", base), trainer_env(db, tmp_path / "a"), tmp_path / "a"
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    config, env = make_config(db, tmp_path / "b", base), trainer_env(db, tmp_path / "b")
    proc = start_trainer(config, env, tmp_path / "b")
    wait_for_event(proc, "checkpoint", step=10)
    proc.send_signal(signal.SIGKILL)
    killed = finish(proc, tmp_path / "b")
    assert killed.returncode == -signal.SIGKILL
    saved = sorted(
        int(p.name.split("-")[1]) for p in (tmp_path / "b" / "checkpoints").glob("step-*")
    )
    assert saved and saved[-1] < reference.of("start")[0]["totalSteps"]

    resumed = run_trainer(config, env, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.of("start")[0]["resumedFromStep"] == saved[-1]
    assert resumed.of("progress")[0]["step"] == saved[-1] + 1
    ref_metrics, got = reference.termination["metrics"], resumed.termination["metrics"]
    for key in ("trainLoss", "evalLoss", "evalAccuracy", "evalMacroF1", "steps", "tokensTrained"):
        assert got[key] == pytest.approx(ref_metrics[key], rel=TOLERANCE), key
    print("reference", {k: ref_metrics[k] for k in ("trainLoss", "evalLoss", "evalAccuracy")})
    print("resumed  ", {k: got[k] for k in ("trainLoss", "evalLoss", "evalAccuracy")})


def test_sigterm_saves_a_checkpoint_and_exits_preempted(seeded, tmp_path):
    db, base = seeded
    config, env = make_config(db, tmp_path, base), trainer_env(db, tmp_path)
    proc = start_trainer(config, env, tmp_path)
    wait_for_event(proc, "progress", step=3)
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, tmp_path)
    assert run.returncode == 75, run.stderr[-3000:]
    term = run.termination
    assert (
        term["outcome"] == "Preempted" and term["reason"] == "Preempted" and term["exitCode"] == 75
    )
    step = run.of("checkpoint")[-1]["step"]
    assert 3 <= step < term["totalSteps"] and term["step"] == step
    assert (tmp_path / "checkpoints" / f"step-{step:08d}" / "meta.json").is_file()
    assert run.of("done")[0]["outcome"] == "Preempted"
    assert not (tmp_path / "model").exists()  # nothing half-exported
    assert (
        json.loads((tmp_path / "checkpoints" / f"step-{step:08d}" / "meta.json").read_text())[
            "step"
        ]
        == step
    )


def test_sigterm_while_the_model_loads_and_the_query_runs_stops_at_once(seeded, tmp_path):
    """The data query runs on its own thread while the base model (MiniLM) loads; SIGTERM
    then still ends the trainer promptly as Preempted, with nothing exported."""
    db, _ = seeded
    config, env = make_config(db, tmp_path, minilm_dir()), trainer_env(db, tmp_path)
    proc = start_trainer(config, env, tmp_path)
    log = tmp_path / "stderr.log"
    deadline = time.monotonic() + 120
    while "data query submitted" not in log.read_text() and proc.poll() is None:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, tmp_path, timeout=300)  # a hang guard, not a speed limit
    assert run.returncode == 75, run.stderr[-3000:]
    # It stopped where it was, not after ingest ("data") or training ("start") had finished.
    assert run.of("data") == [] and run.of("start") == [], run.stdout[-3000:]
    assert run.termination["outcome"] == "Preempted"
    assert not (tmp_path / "model").exists()
