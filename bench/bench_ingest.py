"""Ingest benchmark: Snowflake rows -> training tensors, our streaming path vs the seed's way.

Variants, each run in its own subprocess so peak RSS (``ru_maxrss``) is its own:

- ``seed``: the seed's sketch -- iterate the cursor row by row into a Python list,
  ``datasets.Dataset.from_list``, ``.map`` a batched tokenize, ``set_format("torch")``.
- ``seed-tcmalloc``: the same on tcmalloc, to show how much of the ratio the allocator is.
- ``ours``: the trainer's path -- ``SnowflakeSource.profile`` (aggregate checks), then
  ``build_classification`` for the train and the hashed validation split (Arrow batches,
  batch tokenize, memory-mapped store). It does strictly more work than ``seed``.
- ``ours-parquet``: the same tokenize+store stage fed from a parquet file in
  ``--batch-rows`` chunks. fakesnow returns a whole result in one response (real Snowflake
  sends chunks of a few MB), so this variant shows the memory our stage needs when
  its input really is chunked.

The fakesnow server runs in its own process (its memory is "Snowflake", not the client's).
Tokenizer: a WordPiece vocabulary trained with ``tokenizers`` on the generated text; both
variants use the same one, so the ratios measure data handling, not tokenizer choice.

Tokenizer threads: ``seed`` gets the library's default, parallel on rayon's default pool (the
driver drops ``TOKENIZERS_PARALLELISM`` from the children's environment, e.g. the Makefile's
``false``); ``ours``, ``ours-parquet`` and ``tokenize-only`` tokenize as the trainer does:
``serial_tokenizers``, batches encoded on ``ingest_threads`` threads at once, and the objects
alive before ingest frozen out of the garbage collector's passes (``gc_freeze``).

Allocator: ``seed`` runs on glibc's malloc, as a plain script does; every other variant runs
as the trainer image does, on preloaded tcmalloc (``snowtrain.trainer.allocator``; the host
needs ``apt-get install libtcmalloc-minimal4``, else they run on glibc and a note says so).
Each line names the allocator its process really ran on.

    .venv/bin/python -m bench.bench_ingest --rows 100000 1000000

Prints one line per run and a JSON summary with the ratios (seed / ours), and seed / the
tokenizer alone: the ceiling for any data path with this tokenizer on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from snowtrain.trainer.allocator import (
    active_allocator,
    preload_available,
    with_preloaded_allocator,
)

LABELS = ["negative", "neutral", "positive"]
MAX_LEN = 128
VARIANTS = ("seed", "seed-tcmalloc", "ours", "ours-parquet", "tokenize-only")
#: Run on glibc malloc, as the seed's plain script would; the rest run as the trainer image
#: does, on preloaded tcmalloc (snowtrain/trainer/allocator.py).
GLIBC_VARIANTS = ("seed",)


# -- data -------------------------------------------------------------------------------------


def make_table(rows: int, seed: int = 0) -> Any:
    """``id, text (~100 chars), label`` -- the seed's table shape.

    Words are drawn Zipf-like from a 3000-word pseudo-vocabulary, as in natural text, so a
    WordPiece vocabulary covers most of them (uniform random strings would make every word
    a string of sub-word pieces and the tokenizer unrealistically slow).
    """
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(3000)]
    weights = 1 / np.arange(1, len(vocab) + 1)
    texts = []
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        words = rng.choice(len(vocab), size=(n, 22), p=weights / weights.sum())
        texts += [" ".join([vocab[i] for i in row])[:100] for row in words]
    labels = rng.integers(0, 3, size=rows)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "text": texts,
            "label": [LABELS[i] for i in labels],
        }
    )


def train_tokenizer(texts: list[str], path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # Lowercase + whitespace/punctuation split: a small, fast WordPiece (BERT's full normalizer
    # costs more per text and would only dilute both variants' data handling).
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, WordPieceTrainer(vocab_size=8000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.save(str(path))


def load_tokenizer(path: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=path,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


# -- children ---------------------------------------------------------------------------------


def _connect(port: int) -> Any:
    import snowflake.connector

    return snowflake.connector.connect(
        host="127.0.0.1",
        port=port,
        protocol="http",
        account="bench",
        user="bench",
        password="bench",
        database="BENCH",
        schema="PUBLIC",
        login_timeout=30,
        network_timeout=900,
        paramstyle="qmark",
    )


def run_seed(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    conn = _connect(args.port)
    cur = conn.cursor()
    cur.execute(f"SELECT ID, TEXT, LABEL FROM {args.table}")
    names = [d.name.lower() for d in cur.description]
    rows = [dict(zip(names, row, strict=True)) for row in cur]  # the seed: row by row
    label2id = {name: i for i, name in enumerate(sorted({r["label"] for r in rows}))}
    ds = Dataset.from_list(rows)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        enc = tokenizer(batch["text"], truncation=True, max_length=MAX_LEN)
        enc["labels"] = [label2id[label] for label in batch["label"]]
        return enc

    ds = ds.map(tokenize, batched=True, remove_columns=["id", "text", "label"])
    ds.set_format("torch", columns=["input_ids", "attention_mask", "labels"])
    conn.close()
    return {"items": len(ds), "sample": ds[0]["input_ids"].tolist()[:4]}


#: The emulator's login (any credentials log in), as the trainer reads it from a pod's env.
BENCH_LOGIN = {
    "SNOWFLAKE_ACCOUNT": "bench",
    "SNOWFLAKE_USER": "bench",
    "SNOWFLAKE_PASSWORD": "bench",
}


def data_config(port: int, table: str, batch_rows: int) -> Any:
    """The trainer's data config for the benchmark table (text + label, 10% held out)."""
    from snowtrain.api.trainer_config import SnowflakeSettings, TrainerDataConfig

    return TrainerDataConfig(
        snowflake=SnowflakeSettings(
            host="127.0.0.1",
            port=port,
            protocol="http",
            database="BENCH",
            schema="PUBLIC",
            network_timeout_seconds=900,
        ),
        table=table,
        columns={"text": "TEXT", "label": "LABEL"},
        validation={"fraction": 0.1},
        batch_rows=batch_rows,
    )


def run_ours(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    from snowtrain.trainer.data.source import SnowflakeSource
    from snowtrain.trainer.data.tokenize import build_classification

    cfg = data_config(args.port, args.table, args.batch_rows)
    with SnowflakeSource(cfg, env=BENCH_LOGIN) as src:
        labels = src.profile("classification").labels or []
        label2id = {name: i for i, name in enumerate(labels)}
        train = build_classification(src, "train", tokenizer, label2id, MAX_LEN, args.workdir)
        val = build_classification(src, "validation", tokenizer, label2id, MAX_LEN, args.workdir)
    return {"items": len(train) + len(val), "sample": train[0]["input_ids"].tolist()[:4]}


class ParquetSource:
    """Role-named batches of ``batch_rows`` rows read lazily from a parquet file."""

    def __init__(self, path: str, batch_rows: int) -> None:
        self.path, self.batch_rows = path, batch_rows

    def iter_batches(self, split: str = "train") -> Any:
        import pyarrow.parquet as pq

        # pre_buffer (the default) caches every row group read: memory would grow with the file.
        pf = pq.ParquetFile(self.path, pre_buffer=False)
        yield from pf.iter_batches(batch_size=self.batch_rows, columns=["text", "label"])


def run_ours_parquet(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    from snowtrain.trainer.data.tokenize import build_classification

    label2id = {name: i for i, name in enumerate(LABELS)}
    src = ParquetSource(args.parquet, args.batch_rows)
    train = build_classification(src, "train", tokenizer, label2id, MAX_LEN, args.workdir)
    return {"items": len(train), "sample": train[0]["input_ids"].tolist()[:4]}


def run_tokenize_only(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    """The floor: only the tokenizer over the same texts (as ours calls it), discarded."""
    import pyarrow.parquet as pq

    from snowtrain.trainer.cpus import ingest_threads
    from snowtrain.trainer.data.gc_freeze import frozen_long_lived_objects
    from snowtrain.trainer.data.ordered_map import ordered_map
    from snowtrain.trainer.data.tokenize import Encoder

    encode = Encoder(tokenizer, special=True, max_len=MAX_LEN)
    pf = pq.ParquetFile(args.parquet, pre_buffer=False)
    texts = (
        b.column("text").to_pylist() for b in pf.iter_batches(args.batch_rows, columns=["text"])
    )
    with frozen_long_lived_objects():  # as ``_build`` runs it
        n = sum(len(lengths) for _, lengths in ordered_map(encode, texts, ingest_threads()))
    return {"items": n, "sample": []}


def peak_rss_mb() -> float:
    """VmHWM: this process's peak RSS. (``ru_maxrss`` would carry the parent's peak over
    fork+exec on Linux, charging the driver's generated table to every child.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    """Run one variant; print a JSON line with its wall time and peak RSS."""
    start_total = time.perf_counter()
    tokenizer = load_tokenizer(args.tokenizer)
    import datasets  # noqa: F401 -- import cost is not ingest cost: load both stacks up front
    import torch  # noqa: F401

    import snowtrain.trainer.data.tokenize  # noqa: F401
    from snowtrain.trainer.cpus import serial_tokenizers

    base_rss_mb = peak_rss_mb()
    start, start_cpu = time.perf_counter(), cpu_seconds()
    run = {
        "seed": run_seed,
        "seed-tcmalloc": run_seed,
        "ours": run_ours,
        "ours-parquet": run_ours_parquet,
        "tokenize-only": run_tokenize_only,
    }[args.child]
    if not args.child.startswith("seed"):  # the seed keeps the default: rayon, parallel
        serial_tokenizers()  # as the trainer does: ingest's own threads instead
    result = run(args, tokenizer)
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - start_cpu
    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "variant": args.child,
                "rows": args.rows[0],
                "allocator": active_allocator(),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "peak_rss_mb": round(peak_mb),
                "rss_after_imports_mb": round(base_rss_mb),
                "rss_growth_mb": round(peak_mb - base_rss_mb),
                "process_s": round(time.perf_counter() - start_total, 2),
                **result,
            }
        )
    )


# -- driver -----------------------------------------------------------------------------------


def system_malloc_env() -> dict[str, str]:
    """This environment without a preloaded allocator."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def child_env(variant: str) -> dict[str, str]:
    env = {**system_malloc_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("TOKENIZERS_PARALLELISM", None)  # seed: the default (see top)
    return env if variant in GLIBC_VARIANTS else with_preloaded_allocator(env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("fakesnow")
    proc = subprocess.Popen(
        [str(exe), "-s", "-p", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=system_malloc_env(),  # the server is "Snowflake": the same for every variant
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("fakesnow did not start")


def seed_table(conn: Any, name: str, parquet: Path) -> None:
    cur = conn.cursor()
    cur.execute(f"CREATE OR REPLACE TABLE {name} (ID NUMBER(38,0), TEXT VARCHAR, LABEL VARCHAR)")
    cur.execute("CREATE STAGE IF NOT EXISTS SEED")
    cur.execute(f"PUT 'file://{parquet}' @SEED/{name} AUTO_COMPRESS=FALSE")
    cur.execute(
        f"COPY INTO {name} FROM @SEED/{name} MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE "
        "FILE_FORMAT=(TYPE=PARQUET)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch-rows", type=int, default=8192)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import pyarrow.parquet as pq
    import snowflake.connector

    if not preload_available():
        print(
            "note: libtcmalloc_minimal.so.4 is not installed (apt-get install "
            "libtcmalloc-minimal4): every variant runs on glibc malloc here, unlike the image",
            file=sys.stderr,
        )
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        server = start_server(port)
        try:
            admin = snowflake.connector.connect(
                host="127.0.0.1",
                port=port,
                protocol="http",
                account="bench",
                user="bench",
                password="bench",
                login_timeout=30,
                network_timeout=900,
            )
            admin.cursor().execute("CREATE DATABASE IF NOT EXISTS BENCH")
            admin.cursor().execute("CREATE SCHEMA IF NOT EXISTS BENCH.PUBLIC")
            admin.cursor().execute("USE SCHEMA BENCH.PUBLIC")
            tokenizer_path = tmp / "tokenizer.json"
            results: list[dict[str, Any]] = []
            for rows in args.rows:
                table = make_table(rows)
                parquet = tmp / f"rows_{rows}.parquet"
                pq.write_table(table, parquet, row_group_size=args.batch_rows)
                if not tokenizer_path.exists():
                    train_tokenizer(table.column("text").to_pylist()[:20_000], tokenizer_path)
                name = f"T_{rows}"
                seed_table(admin, name, parquet)
                del table
                for variant in variants:
                    workdir = tmp / f"work_{variant}_{rows}"
                    cmd = [
                        sys.executable,
                        "-m",
                        "bench.bench_ingest",
                        "--child",
                        variant,
                        "--rows",
                        str(rows),
                        "--port",
                        str(port),
                        "--table",
                        name,
                        "--parquet",
                        str(parquet),
                        "--tokenizer",
                        str(tokenizer_path),
                        "--workdir",
                        str(workdir),
                        "--batch-rows",
                        str(args.batch_rows),
                    ]
                    out = subprocess.run(
                        cmd, env=child_env(variant), capture_output=True, text=True, check=False
                    )
                    if out.returncode != 0:
                        print(out.stderr[-3000:], file=sys.stderr)
                        raise SystemExit(f"{variant} at {rows} rows failed")
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    print(json.dumps(result), flush=True)
                    results.append(result)
                admin.cursor().execute(f"DROP TABLE {name}")
            admin.close()
        finally:
            server.terminate()
            server.wait(30)

    summary: dict[str, Any] = {}
    for rows in args.rows:
        by = {r["variant"]: r for r in results if r["rows"] == rows}
        line: dict[str, Any] = {}
        for ours in ("ours", "ours-parquet"):
            if "seed" in by and ours in by:
                line[f"wall_seed_over_{ours}"] = round(by["seed"]["wall_s"] / by[ours]["wall_s"], 2)
                line[f"cpu_seed_over_{ours}"] = round(by["seed"]["cpu_s"] / by[ours]["cpu_s"], 2)
                line[f"rss_growth_mb_{ours}"] = by[ours]["rss_growth_mb"]
                if "tokenize-only" in by:
                    # CPU spent beyond the tokenizer itself: what the data path costs.
                    floor = by["tokenize-only"]["cpu_s"]
                    line[f"overhead_cpu_s_{ours}"] = round(by[ours]["cpu_s"] - floor, 1)
        if "seed-tcmalloc" in by and "ours" in by:
            # How much of the ratio the allocator alone is: the seed on the same malloc.
            line["wall_seed_tcmalloc_over_ours"] = round(
                by["seed-tcmalloc"]["wall_s"] / by["ours"]["wall_s"], 2
            )
        if "seed" in by:
            line["rss_growth_mb_seed"] = by["seed"]["rss_growth_mb"]
            if "tokenize-only" in by:
                # The most any data path could reach here: tokenizing alone takes this long.
                line["wall_seed_over_tokenizer_alone"] = round(
                    by["seed"]["wall_s"] / by["tokenize-only"]["wall_s"], 2
                )
                line["overhead_cpu_s_seed"] = round(
                    by["seed"]["cpu_s"] - by["tokenize-only"]["cpu_s"], 1
                )
        summary[str(rows)] = line
    print(json.dumps({"summary": summary}, indent=2))


if __name__ == "__main__":
    main()
