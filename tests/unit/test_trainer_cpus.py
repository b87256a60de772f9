"""The pod's CPUs and the tokenizer's threads: quota-capped, shared among ranks, ingest only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snowtrain.trainer.cpus import cap_tokenizer_threads, parallel_tokenization, usable_cpus
from snowtrain.trainer.data.tokenize import Encoder

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


def test_tokenizer_threads_follow_the_quota_and_the_ranks_on_the_pod(
    node_of_64_cores: None, tmp_path: Path
) -> None:
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    env: dict[str, str] = {}
    assert cap_tokenizer_threads(env, tmp_path) == 8
    assert env["RAYON_NUM_THREADS"] == "8"
    env = {"LOCAL_WORLD_SIZE": "4"}  # torchrun --nproc-per-node 4: the ranks share 8 CPUs
    assert cap_tokenizer_threads(env, tmp_path) == 2
    assert env["RAYON_NUM_THREADS"] == "2"
    env = {"LOCAL_WORLD_SIZE": "16"}
    assert cap_tokenizer_threads(env, tmp_path) == 1


def test_users_rayon_setting_wins_unless_rayon_would_read_it_as_every_core(
    node_of_64_cores: None, tmp_path: Path
) -> None:
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    env = {"RAYON_NUM_THREADS": "1"}  # the way to keep ingest serial
    assert cap_tokenizer_threads(env, tmp_path) == 1
    assert env["RAYON_NUM_THREADS"] == "1"
    for bad in ("0", "many", ""):
        env = {"RAYON_NUM_THREADS": bad}
        assert cap_tokenizer_threads(env, tmp_path) == 4
        assert env["RAYON_NUM_THREADS"] == "4"


def test_parallel_tokenization_is_off_again_after_the_block_even_on_error() -> None:
    env = {"TOKENIZERS_PARALLELISM": "false"}  # the image's default
    with parallel_tokenization(env):
        assert env["TOKENIZERS_PARALLELISM"] == "true"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    env = {}  # unset: "false" after, so a forked child never tokenizes in parallel
    with pytest.raises(RuntimeError), parallel_tokenization(env):
        raise RuntimeError("ingest failed")
    assert env == {"TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.parametrize("name", ["wordpiece_tokenizer", "bpe_tokenizer"])
@pytest.mark.parametrize(("special", "max_len"), [(True, 12), (False, None)])
def test_parallel_encoding_gives_the_same_tokens(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    special: bool,
    max_len: int | None,
) -> None:
    tok = request.getfixturevalue(name)
    words = ["the", "movie", "was", "great", "and", "I", "loved", "it", "ünïcödé!", "?"]
    texts = [" ".join(words[i % 7 : i % 7 + i % 5]) * (1 + i % 3) for i in range(3000)]
    encode = Encoder(tok, special=special, max_len=max_len)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    serial_ids, serial_lengths = encode(texts)
    with parallel_tokenization():
        ids, lengths = encode(texts)
    assert lengths.tolist() == serial_lengths.tolist()
    assert ids.tolist() == serial_ids.tolist()


def test_the_tokenizer_pool_never_exceeds_the_cap(tmp_path: Path) -> None:
    """End to end through rayon, in a fresh process (the pool is sized once per process)."""
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # 1 CPU
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from tokenizers import Tokenizer, models, pre_tokenizers
        from snowtrain.trainer.cpus import cap_tokenizer_threads, parallel_tokenization

        cap = cap_tokenizer_threads(cgroup_root=Path({str(tmp_path)!r}))
        tok = Tokenizer(models.WordLevel({{"a": 0, "b": 1, "?": 2}}, unk_token="?"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        before = len(os.listdir("/proc/self/task"))
        with parallel_tokenization():
            tok.encode_batch_fast(["a b a b c"] * 5000)
        print(cap, len(os.listdir("/proc/self/task")) - before)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    cap, pool_threads = map(int, out.stdout.split())
    assert (cap, pool_threads) == (1, 1)
