"""The pod's CPUs and ingest's tokenizer threads: quota-capped, shared among ranks, no rayon."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snowtrain.trainer.cpus import ingest_threads, serial_tokenizers, usable_cpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def node_of_64_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a container sees on a big node: every core in its affinity mask."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))


def test_cgroup_v2_quota_caps_the_cpus(node_of_64_cores: None, tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("400000 100000\n")  # limits.cpu: 4
    assert usable_cpus(tmp_path) == 4
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: round up
    assert usable_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no limit
    assert usable_cpus(tmp_path) == 64


def test_cgroup_v1_quota_caps_the_cpus(node_of_64_cores: None, tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert usable_cpus(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert usable_cpus(tmp_path) == 64


def test_ingest_threads_follow_the_quota_and_the_ranks_on_the_pod(
    node_of_64_cores: None, tmp_path: Path
) -> None:
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert ingest_threads({}, tmp_path) == 8
    # torchrun --nproc-per-node 4: the ranks share 8 CPUs
    assert ingest_threads({"LOCAL_WORLD_SIZE": "4"}, tmp_path) == 2
    assert ingest_threads({"LOCAL_WORLD_SIZE": "16"}, tmp_path) == 1


def test_users_ingest_threads_win_unless_not_a_positive_count(
    node_of_64_cores: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert ingest_threads({"SNOWTRAIN_INGEST_THREADS": "1"}, tmp_path) == 1  # serial ingest
    assert ingest_threads({"SNOWTRAIN_INGEST_THREADS": "12"}, tmp_path) == 12
    for bad in ("0", "many", ""):
        assert ingest_threads({"SNOWTRAIN_INGEST_THREADS": bad}, tmp_path) == 4
    assert "ignoring SNOWTRAIN_INGEST_THREADS='many'" in caplog.text


def test_the_trainer_keeps_tokenizers_off_rayons_pool() -> None:
    env = {"TOKENIZERS_PARALLELISM": "true"}  # a user's shell
    serial_tokenizers(env)
    assert env == {"TOKENIZERS_PARALLELISM": "false"}
    env = {}
    serial_tokenizers(env)  # unset would let the bindings go parallel
    assert env == {"TOKENIZERS_PARALLELISM": "false"}


def test_ingest_starts_no_rayon_threads(tmp_path: Path) -> None:
    """Threads that tokenize are ours; the Rust side starts no pool (fork-safe, quota-safe).

    In a fresh process (a pool lives for the process): a 2-thread ingest of a few thousand
    texts leaves only the interpreter's own threads behind, where a parallel encode would
    leave rayon's.
    """
    script = textwrap.dedent(
        """
        import os
        import sys
        import time
        import pyarrow as pa
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
        from snowtrain.trainer.cpus import serial_tokenizers
        from snowtrain.trainer.data.tokenize import build_packed

        class Source:
            def iter_batches(self, split="train"):
                yield from pa.table({"text": ["a b a b c"] * 20000}).to_batches(1000)

        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        serial_tokenizers()
        tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "?": 2, "</s>": 3}, unk_token="?"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="?")
        before = len(os.listdir("/proc/self/task"))
        ds = build_packed(Source(), "train", hf, 8, sys.argv[1], threads=2)
        # A joined thread's task can outlive join() by a moment; rayon's pool never leaves.
        deadline = time.monotonic() + 60
        while len(os.listdir("/proc/self/task")) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        print(len(ds), len(os.listdir("/proc/self/task")) - before)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    blocks, leftover_threads = map(int, out.stdout.split())
    assert blocks == 20000 * 6 // 8 and leftover_threads == 0
