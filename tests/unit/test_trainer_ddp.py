"""DDP under torchrun: two CPU ranks (gloo) train on disjoint shards and agree on the weights.

Real torchrun, real process group; only the GPUs are missing (gloo replaces NCCL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import itertools, json, os, sys, torch
    sys.path.insert(0, os.getcwd())
    from tests.unit.test_trainer_loop import ListDataset, counting_examples, tiny_gpt2
    from snowtrain.api.spec import CheckpointSpec, TrainingSpec
    from snowtrain.trainer.checkpoint import CheckpointManager
    from snowtrain.trainer.distributed import init_world, shutdown
    from snowtrain.trainer.loop import Objective, RunContext, TrainData, fit, seed_everything
    from snowtrain.trainer.progress import Reporter

    torch.set_num_threads(1)
    world = init_world()
    seed_everything(0)
    model = tiny_gpt2()
    spec = TrainingSpec(max_steps=6, batch_size=4, learning_rate=3e-3, gradient_accumulation_steps=2)
    out = sys.argv[1]
    cadence = json.loads(sys.argv[2])
    if cadence.pop("minute_per_clock_read", False):  # a clock that moves on by itself
        cadence["clock"] = itertools.count(0, 60).__next__
    result = fit(
        model,
        TrainData(
            ListDataset(counting_examples(64, 1)), ListDataset(counting_examples(8, 2)),
            ListDataset.collate,
        ),
        spec,
        Objective("causal-lm"),
        RunContext(
            world, Reporter(interval_seconds=0, enabled=world.is_main),
            checkpoints=CheckpointManager(out + "/ckpt", **cadence),
        ),
    )
    checksum = sum(p.double().sum().item() for p in model.parameters())
    with open(f"{out}/rank{world.rank}.json", "w") as fh:
        json.dump({"checksum": checksum, "metrics": result.metrics}, fh)
    shutdown(world)
    """
)


def run_two_ranks(tmp_path, checkpoints: dict, timeout: float) -> subprocess.CompletedProcess:
    """The worker above under real torchrun, two CPU ranks; ``checkpoints`` are the
    CheckpointManager's cadence arguments."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(script),
        str(tmp_path),
        json.dumps(checkpoints),
    ]
    with subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"OMP_NUM_THREADS": "1", **_env()},
        start_new_session=True,  # a hung run is killed with its ranks, not just torchrun
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"the ranks hung for {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.slow
def test_two_ranks_train_in_step_and_only_rank0_reports(tmp_path):
    proc = run_two_ranks(tmp_path, {"every_steps": 3}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)  # in sync
    # Validation is sharded and summed over ranks: both see the same metrics.
    assert ranks[0]["metrics"]["evalLoss"] == pytest.approx(ranks[1]["metrics"]["evalLoss"])
    # 2 ranks x batch 4 x accumulation 2 = 16 samples per step
    assert ranks[0]["metrics"]["tokensTrained"] == 6 * 16 * 16
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("start") == 1  # rank 1 is silent
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == [
        "step-00000003",
        "step-00000006",
    ]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}


@pytest.mark.slow
def test_time_based_checkpoints_do_not_split_the_ranks(tmp_path):
    """``checkpoint.everyMinutes`` (on by default) under DDP. Each rank's clock says "due" at
    its own moment, and only rank 0 saves; had each rank followed its own clock, one would
    wait in the checkpoint barrier while the other entered DDP's all-reduce: a hang, not an
    error. Each rank's clock here moves a minute per reading, so with a checkpoint every 2.5
    minutes rank 1's clock says "due" one step after rank 0 has saved and restarted its own."""
    cadence = {"every_minutes": 2.5, "keep": 10, "minute_per_clock_read": True}
    proc = run_two_ranks(tmp_path, cadence, timeout=600)  # a hang guard, not a speed limit
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("step-*"))
    assert len(saved) >= 2 and saved[-1] == "step-00000006"
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [
        int(name.removeprefix("step-")) for name in saved
    ]
