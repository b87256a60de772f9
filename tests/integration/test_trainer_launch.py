"""``python -m snowtrain.trainer`` on a machine with several GPUs runs one DDP rank per GPU;
as one pod of a multi-node attempt it meets the other pods at the attempt's rendezvous store.

No GPUs here: ``SNOWTRAIN_PROCESSES_PER_NODE=2`` stands in for two visible GPUs, so the same
launcher starts two gloo ranks under ``torch.distributed.run``. Everything else is the real
path: both ranks read the emulator, rank 0 alone reports and exports, and the launcher hands
SIGTERM on and exits with the ranks' code. Two "pods" are two launchers on this machine with
the environment the operator gives its pods, a real store process
(``snowtrain.trainer.rendezvous_store``) and one output directory (the shared volume); the
cluster end-to-end test runs the same in pods.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snowtrain.api.torchrun import POD_IP_ENV, rendezvous_env
from tests.fixtures.serving import free_port
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
    # Each rank read and tokenized only its share of the rows (sharded ingest); each
    # optimizer step took a batch of 4 from each rank: 5 epochs of the largest share.
    train_rows = run.of("data")[0]["rows"]  # the validation rows are counted apart
    share = start["examplesPerRank"]
    assert train_rows / 2 <= share < train_rows * 0.6
    assert start["totalSteps"] == 5 * -(-share // 4)
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


# --- several pods ------------------------------------------------------------------------


@pytest.fixture
def rendezvous_store() -> Iterator[str]:
    """The store process a multi-node attempt's pods meet on; its ``host:port``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snowtrain.trainer.rendezvous_store", f"--port={port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    assert "listening" in proc.stderr.readline()
    yield f"127.0.0.1:{port}"
    proc.terminate()
    assert proc.wait(timeout=30) == 0  # SIGTERM (the operator deleting it) is a clean stop


class Pod:
    """One launcher with a pod's environment; stdout to a file (a pipe nobody reads while
    the test waits would fill up and block rank 0's event lines)."""

    def __init__(self, config: dict[str, Any], env: dict[str, str], home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        (home / "config.json").write_text(json.dumps(config))
        with open(home / "stdout.log", "w") as out, open(home / "stderr.log", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snowtrain.trainer", "--config", str(home / "config.json")],
                stdout=out,
                stderr=err,
                text=True,
                env={**env, "TERMINATION_MESSAGE_PATH": str(home / "termination-log")},
            )

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = (self.home / "stdout.log").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if e.get("event") == name]

    def termination(self) -> dict[str, Any] | None:
        text = (self.home / "termination-log").read_text().strip()
        return json.loads(text) if text else None

    def stderr(self) -> str:
        return (self.home / "stderr.log").read_text()[-3000:]


def _losses(events: list[dict[str, Any]]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if "loss" in e}


@pytest.fixture
def two_pods(snowflake_db, tmp_path, rendezvous_store):
    """Start "pods" of one 2-node attempt on a shared output directory (``start(i)``)."""
    snowflake_db.seed_table("REVIEWS", sentiment_table(300))
    shared = tmp_path / "volume"
    training = {
        "epochs": 2,
        "batchSize": 4,
        "learningRate": 2e-3,
        "warmupRatio": 0.1,
        "maxSeqLength": 32,
        "checkpoint": {"everySteps": 5, "keep": 2},
    }
    config = sentiment_config(
        snowflake_db, shared, tiny_bert_dir(tmp_path / "base"), training=training
    )
    meet = rendezvous_env(2, rendezvous_store, "test-a1", max_restarts=1)

    def start(index: int) -> Pod:
        env = trainer_env(
            snowflake_db, tmp_path, SNOWTRAIN_PROCESSES_PER_NODE="1", **meet,
            **{POD_IP_ENV: "127.0.0.1"},
        )  # fmt: skip
        return Pod(config, env, tmp_path / f"pod{index}")

    return start, config, shared


def test_two_pods_train_exactly_like_two_ranks_on_one_pod(two_pods, snowflake_db, tmp_path):
    start, config, shared = two_pods
    pods = [start(0), start(1)]
    assert [p.wait() for p in pods] == [0, 0], pods[0].stderr() + pods[1].stderr()
    [reporter] = [p for p in pods if p.events("start")]  # rank 0 alone reports
    assert reporter.events("start")[0]["ranks"] == 2
    assert "as one of 2 pods" in reporter.stderr()
    assert (shared / "model" / "model.safetensors").is_file()

    one_pod = tmp_path / "one-pod"
    one_pod.mkdir()
    single = dict(
        config, output={"dir": str(one_pod / "model"), "checkpointDir": str(one_pod / "ck")}
    )
    env = trainer_env(snowflake_db, one_pod, SNOWTRAIN_PROCESSES_PER_NODE="2")
    run = run_trainer(single, env, one_pod)
    assert run.returncode == 0, run.stderr[-3000:]
    # Same ranks, same shards, same seeds: the same loss at every step, whichever pod held
    # rank 0 (its shard is the same), within the reordering of float sums.
    multi, local = _losses(reporter.events("progress")), _losses(run.of("progress"))
    assert multi.keys() == local.keys() and len(multi) >= 10
    for step in multi:
        assert multi[step] == pytest.approx(local[step], rel=1e-4, abs=1e-5), step
    mine, theirs = reporter.termination()["metrics"], run.termination["metrics"]
    assert mine["evalLoss"] == pytest.approx(theirs["evalLoss"], rel=1e-4)


def test_a_lost_pod_is_replaced_and_both_resume_from_the_checkpoint(two_pods):
    start, _, shared = two_pods
    pods = [start(0), start(1)]
    deadline = time.monotonic() + 600
    while not list((shared / "checkpoints").glob("step-*/meta.json")):
        assert time.monotonic() < deadline and all(p.proc.poll() is None for p in pods)
        time.sleep(0.5)  # polls the shared volume for the first checkpoint
    pods[1].proc.send_signal(signal.SIGTERM)  # the kubelet stopping a deleted pod
    assert pods[1].wait() == 75, pods[1].stderr()  # it saved with the others and says so
    assert pods[1].termination()["outcome"] == "Preempted"
    replacement = start(2)  # what the Job controller does for the lost pod
    assert replacement.wait() == 0, replacement.stderr() + pods[0].stderr()
    assert pods[0].wait() == 0, pods[0].stderr()  # the survivor regrouped, did not fail
    starts = [e for p in (*pods, replacement) for e in p.events("start")]
    resumed = [e["resumedFromStep"] for e in starts if e.get("resumedFromStep")]
    assert resumed and resumed[-1] >= 5, starts  # the second round went on from a checkpoint
    # rank 0's answers: the first round stopped (Preempted), the second finished
    outcomes = sorted(e["outcome"] for p in (*pods, replacement) for e in p.events("done"))
    assert outcomes == ["Preempted", "Succeeded"], outcomes
    assert (shared / "model" / "model.safetensors").is_file()
