"""``python -m snowtrain.trainer`` on a machine with several GPUs runs one DDP rank per GPU.

No GPUs here: ``SNOWTRAIN_PROCESSES_PER_NODE=2`` stands in for two visible GPUs, so the same
launcher starts two gloo ranks under ``torch.distributed.run``. Everything else is the real
path: both ranks read the emulator, rank 0 alone reports and exports, and the launcher hands
SIGTERM on and exits with the ranks' code.
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.trainer_run import (
    finish,
    run_trainer,
    sentiment_config,
    sentiment_table,
    start_trainer,
    tiny_bert_dir,
    trainer_env,
    wait_for_event,
)

pytestmark = [pytest.mark.slow, pytest.mark.snowflake]


@pytest.fixture
def two_rank_run(snowflake_db, tmp_path):
    snowflake_db.seed_table("REVIEWS", sentiment_table(300))
    config = sentiment_config(
        snowflake_db,
        tmp_path,
        tiny_bert_dir(tmp_path / "base"),
        training={
            "epochs": 5,
            "batchSize": 4,
            "learningRate": 2e-3,
            "warmupRatio": 0.1,
            "maxSeqLength": 32,
            "checkpoint": {"everySteps": 5, "keep": 2},
        },
    )
    env = trainer_env(snowflake_db, tmp_path, SNOWTRAIN_PROCESSES_PER_NODE="2")
    return config, env, tmp_path


def test_two_ranks_train_one_model_and_rank_0_alone_reports(two_rank_run):
    config, env, tmp = two_rank_run
    run = run_trainer(config, env, tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "starting 2 training processes" in run.stderr
    [start] = run.of("start")  # rank 1 is silent
    assert start["ranks"] == 2
    assert [e["outcome"] for e in run.of("done")] == ["Succeeded"]
    metrics = run.termination["metrics"]
    assert metrics["steps"] == start["totalSteps"]
    # each optimizer step took one batch of 4 from each rank: 5 epochs of the training split
    train_rows = run.of("data")[0]["rows"]  # the validation rows are counted apart
    assert start["totalSteps"] == 5 * -(-train_rows // 8)
    print("two ranks:", {k: metrics[k] for k in ("evalAccuracy", "evalLoss", "trainLoss")})
    assert metrics["evalAccuracy"] >= 0.9
    assert (tmp / "model" / "model.safetensors").is_file()


def test_sigterm_reaches_every_rank_and_the_launcher_exits_preempted(two_rank_run):
    config, env, tmp = two_rank_run
    proc = start_trainer(config, env, tmp)
    wait_for_event(proc, "progress", step=2)
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, tmp)
    assert run.returncode == 75, run.stderr[-3000:]  # rank 0's code, not torchrun's 1
    assert run.termination["outcome"] == "Preempted"
    step = run.termination["step"]
    assert step >= 2 and (tmp / "checkpoints" / f"step-{step:08d}" / "meta.json").is_file()
    assert not (tmp / "model").exists()
