"""How ``python -m snowtrain.trainer`` decides to fan out over GPUs, and what it exits with.

The launch itself runs for real in tests/integration/test_trainer_launch.py (two CPU ranks).
"""

from __future__ import annotations

import sys

import pytest

from snowtrain.api.torchrun import POD_IP_ENV, Rendezvous, rendezvous_env
from snowtrain.trainer.launch import (
    PROCESSES_ENV,
    exit_code_from_summary,
    launched_by_torchrun,
    processes_per_node,
    torchrun_command,
)


def test_one_rank_per_visible_gpu_unless_told_otherwise():
    assert processes_per_node({}, visible_gpus=0) == 1  # CPU: train in this process
    assert processes_per_node({}, visible_gpus=1) == 1
    assert processes_per_node({}, visible_gpus=8) == 8
    assert processes_per_node({PROCESSES_ENV: "1"}, visible_gpus=8) == 1  # opt out
    assert processes_per_node({PROCESSES_ENV: "2"}, visible_gpus=0) == 2  # gloo ranks on CPU


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_process_count_names_the_variable(value):
    with pytest.raises(ValueError, match=PROCESSES_ENV):
        processes_per_node({PROCESSES_ENV: value}, visible_gpus=4)


def test_ranks_never_launch_again():
    assert launched_by_torchrun({"LOCAL_RANK": "0", "WORLD_SIZE": "4"})
    assert not launched_by_torchrun({})


def test_the_ranks_run_on_this_python_with_a_shutdown_longer_than_any_grace_period():
    cmd = torchrun_command(["--config", "c.json"], 4)
    # `torchrun` on PATH may be another Python's (the base image's), without snowtrain
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=4" in cmd
    timeout = next(int(a.split("=")[1]) for a in cmd if a.startswith("--shutdown-timeout="))
    assert timeout > 120  # torchrun's 30 s default kills ranks mid-checkpoint
    assert cmd[-4:] == ["-m", "snowtrain.trainer", "--config", "c.json"]


def test_a_pod_of_several_meets_the_others_at_the_store_by_ip():
    env = {**rendezvous_env(2, "10.96.0.7:29400", "ftj-a3", 4), POD_IP_ENV: "10.244.0.9"}
    meet = Rendezvous.from_env(env)
    assert meet == Rendezvous(2, "10.96.0.7:29400", "ftj-a3", "10.244.0.9", 4)
    cmd = torchrun_command(["--config", "c.json"], 1, meet)
    flags = dict(a.removeprefix("--").split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    assert "--standalone" not in cmd
    assert flags["rdzv-backend"] == "c10d" and flags["rdzv-endpoint"] == "10.96.0.7:29400"
    assert flags["rdzv-id"] == "ftj-a3" and flags["nnodes"] == "2"
    # the rank-0 address the others dial is this pod's IP, not a name needing cluster DNS
    assert flags["local-addr"] == "10.244.0.9"
    assert "is_host=false" in flags["rdzv-conf"]  # the store is its own pod, never a trainer
    assert flags["max-restarts"] == "4"


def test_one_node_needs_no_rendezvous_and_a_half_set_one_names_what_is_missing():
    assert Rendezvous.from_env({}) is None
    assert Rendezvous.from_env(rendezvous_env(1, "x:1", "id", 0)) is None
    with pytest.raises(ValueError, match=POD_IP_ENV):
        Rendezvous.from_env(rendezvous_env(2, "10.96.0.7:29400", "id", 0))
    with pytest.raises(ValueError, match="integers"):
        Rendezvous.from_env(
            {**rendezvous_env(2, "a:1", "id", 0), "SNOWTRAIN_NODES": "two", POD_IP_ENV: "1.2.3.4"}
        )


@pytest.mark.parametrize(
    ("summary", "launcher_code", "expected"),
    [
        ('{"outcome":"Preempted","exitCode":75}', 1, 75),  # torchrun says 1; rank 0 said 75
        ('{"outcome":"Failed","exitCode":65}', 1, 65),
        ('{"outcome":"Succeeded","exitCode":0}', 0, 0),
        (None, 1, 1),  # no summary: the ranks never got that far
        ("", -9, -9),
        ("not json", 1, 1),
        ('{"outcome":"Succeeded","exitCode":0}', 1, 1),  # a failure is never reported as 0
    ],
)
def test_the_launcher_exits_with_rank_0s_code(summary, launcher_code, expected):
    assert exit_code_from_summary(summary, launcher_code) == expected
