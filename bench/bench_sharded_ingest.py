"""Ingest divided over ranks: Snowflake rows -> token stores, one rank vs several.

Variants, each a real ``torch.distributed.run`` of the trainer's data path (``SnowflakeSource``
+ ``build_classification`` for both splits, tokenizer threads from ``ingest_threads`` as the
trainer sets them, tcmalloc preloaded as in the image), against an emulator that answers the
way Snowflake does (the first rows inline, the rest as gzip'd Arrow chunks the connector
downloads: ``tests/fixtures/snowflake_chunks.py``):

- ``one-rank``: one process, the whole result (every core of the machine for its tokenizer);
- ``ranks-whole``: N ranks, each reading and tokenizing every row: how multi-GPU pods
  ingested before the sharded path (the same work N times over);
- ``ranks-sharded``: N ranks, each reading only its range of the ordered result.

Wall is from the moment every rank is ready to the last rank's end (the ranks start together
behind a barrier); peak RSS is per rank, and so is what ingest adds to it after the imports
(torch and the tokenizer are most of a rank's memory; the data path streams). The sharded ranks' stores are checked to be, in rank
order, exactly the one rank's (token ids and labels of each item, both splits), and the
fingerprint the same.

Threads: by default each variant tokenizes as the trainer would in one pod (the machine's
cores shared among its ranks, so one rank gets them all). ``--threads-per-rank N`` gives every
rank of every variant N threads, as separate nodes of N cores would: the comparison of one
node with several.

    .venv/bin/python -m bench.bench_sharded_ingest --rows 1000000 --ranks 2
    .venv/bin/python -m bench.bench_sharded_ingest --rows 1000000 --ranks 2 --threads-per-rank 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_ingest import MAX_LEN, cpu_seconds, make_table, peak_rss_mb, train_tokenizer
from snowtrain.trainer.cpus import INGEST_THREADS_ENV

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("ranks-sharded", "one-rank", "ranks-whole")  # sharded first: its ranges
CHUNK_ROWS = 20_000  # about 2 MB of text a chunk, as Snowflake's first chunks are


def _rank_main(args: argparse.Namespace) -> None:
    """One rank: ingest as the trainer does; rank 0 prints the run's JSON line."""
    from bench.bench_ingest import BENCH_LOGIN, data_config, load_tokenizer
    from snowtrain.trainer.cpus import ingest_threads, serial_tokenizers
    from snowtrain.trainer.data.shard import Shard
    from snowtrain.trainer.data.source import SnowflakeSource
    from snowtrain.trainer.data.tokenize import build_classification
    from snowtrain.trainer.distributed import GroupExchange, barrier, init_world, shutdown

    world = init_world()
    exchange = GroupExchange(world)
    tokenizer = load_tokenizer(args.tokenizer)
    serial_tokenizers()
    cfg = data_config(args.port, "REVIEWS", 8192)
    shard = Shard(world.rank, world.size, exchange) if args.variant == "ranks-sharded" else None
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-rank{world.rank}-"))
    base_rss = peak_rss_mb()
    barrier(world)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    with SnowflakeSource(cfg, env=BENCH_LOGIN, shard=shard) as src:
        labels = src.profile("classification").labels or []
        label2id = {name: i for i, name in enumerate(labels)}
        stores = {
            split: build_classification(src, split, tokenizer, label2id, MAX_LEN, workdir / split)
            for split in ("train", "validation")
        }
        fingerprint = src.fingerprint.content_sha256
    wall = time.perf_counter() - start
    mine = {
        "wall_s": wall,
        "cpu_s": cpu_seconds() - start_cpu,
        "peak_rss_mb": peak_rss_mb(),
        "rss_growth_mb": peak_rss_mb() - base_rss,
        "rows": {split: len(store) for split, store in stores.items()},
        "digest": {
            split: _digests(store, args.ranges.get(split) if args.ranges else None)
            for split, store in stores.items()
        },
        "threads": ingest_threads(),
    }
    everyone = exchange.all_gather(mine) if world.distributed else [mine]
    if world.rank == 0:
        print(json.dumps({"variant": args.variant, "ranks": world.size,
                          "fingerprint": fingerprint, "per_rank": everyone}))  # fmt: skip
    shutdown(world)


def _digests(store: Any, sizes: list[int] | None) -> list[str]:
    """SHA-256 of the token ids and labels of each piece of ``store``, cut into ``sizes``
    items (the sharded ranks' store sizes; None: one piece)."""
    out, start = [], 0
    for size in sizes or [len(store)]:
        sha = hashlib.sha256()
        for i in range(start, start + size):
            item = store[i]
            sha.update(item["input_ids"].numpy().tobytes())
            sha.update(item["labels"].numpy().tobytes())
        out.append(sha.hexdigest())
        start += size
    return out


def _run(variant: str, args: argparse.Namespace, port: int, tok: Path, ranges: dict | None) -> dict:
    from snowtrain.trainer.allocator import with_preloaded_allocator

    nproc = 1 if variant == "one-rank" else args.ranks
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "bench.bench_sharded_ingest", "--rank-main", "--variant", variant,
        "--port", str(port), "--tokenizer", str(tok), "--ranges", json.dumps(ranges or {}),
    ]  # fmt: skip
    env = with_preloaded_allocator({**os.environ, "OMP_NUM_THREADS": "1"})
    env.pop("TOKENIZERS_PARALLELISM", None)
    if args.threads_per_rank:
        env[INGEST_THREADS_ENV] = str(args.threads_per_rank)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _shares_make_the_whole(one: dict, sharded: dict) -> bool:
    """The sharded ranks' stores, in rank order, are the one rank's cut where they end."""
    return sharded["fingerprint"] == one["fingerprint"] and all(
        [r["digest"][split][0] for r in sharded["per_rank"]] == one["per_rank"][0]["digest"][split]
        for split in ("train", "validation")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads-per-rank", type=int, default=0)
    parser.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--ranges", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_main:
        _rank_main(args)
        return

    import pyarrow.parquet as pq

    from bench.bench_ingest import free_port, seed_table
    from tests.fixtures.snowflake_chunks import chunked_server

    work = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    table = make_table(args.rows)
    tok = work / "tokenizer.json"
    train_tokenizer(table.column("text").to_pylist()[:50_000], tok)
    pq.write_table(table, work / "rows.parquet")
    del table
    port = free_port()
    results = {}
    with chunked_server("127.0.0.1", port, CHUNK_ROWS):
        import snowflake.connector

        conn = snowflake.connector.connect(
            host="127.0.0.1", port=port, protocol="http", account="bench", user="bench",
            password="bench", paramstyle="qmark",
        )  # fmt: skip
        conn.cursor().execute("CREATE DATABASE BENCH")
        conn.cursor().execute("CREATE SCHEMA BENCH.PUBLIC")
        conn.cursor().execute("USE SCHEMA BENCH.PUBLIC")
        seed_table(conn, "REVIEWS", work / "rows.parquet")
        # What the warehouse spends before any rank reads a row (here the emulator's query
        # and chunking, on this machine's cores; Snowflake's own servers on an account):
        # the same for every variant, so it dilutes every ratio of walls.
        began = time.perf_counter()
        conn.cursor().execute('SELECT "TEXT", "LABEL" FROM REVIEWS ORDER BY HASH("TEXT")')
        query_s = time.perf_counter() - began
        conn.close()
        ranges = None
        for variant in args.variants.split(","):
            results[variant] = _run(variant, args, port, tok, ranges)
            if variant == "ranks-sharded":  # where the one rank's store is cut to compare
                ranges = {
                    split: [r["rows"][split] for r in results[variant]["per_rank"]]
                    for split in ("train", "validation")
                }
            r = results[variant]
            per = r["per_rank"]
            print(
                f"{variant:>14}: wall {max(p['wall_s'] for p in per):7.1f} s, "
                f"peak RSS per rank {', '.join(str(round(p['peak_rss_mb'])) for p in per)} MiB "
                f"(ingest's own: {', '.join(str(round(p['rss_growth_mb'])) for p in per)}), "
                f"threads per rank {per[0]['threads']}",
                flush=True,
            )
    wall = {v: max(p["wall_s"] for p in r["per_rank"]) for v, r in results.items()}
    rss = {v: [p["rss_growth_mb"] for p in r["per_rank"]] for v, r in results.items()}
    summary: dict[str, Any] = {
        "rows": args.rows,
        "ranks": args.ranks,
        "threads_per_rank": {v: r["per_rank"][0]["threads"] for v, r in results.items()},
        "query_s": round(query_s, 1),
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    if "one-rank" in wall and "ranks-sharded" in wall:
        summary["speedup_sharded_vs_one_rank"] = round(wall["one-rank"] / wall["ranks-sharded"], 2)
        summary["speedup_after_the_query"] = round(
            (wall["one-rank"] - query_s) / (wall["ranks-sharded"] - query_s), 2
        )
        summary["ingest_rss_per_rank_vs_one_rank"] = [
            round(mb / rss["one-rank"][0], 2) for mb in rss["ranks-sharded"]
        ]
        summary["same_stores_and_fingerprint"] = _shares_make_the_whole(
            results["one-rank"], results["ranks-sharded"]
        )
    if "ranks-whole" in wall and "ranks-sharded" in wall:
        summary["speedup_sharded_vs_whole"] = round(wall["ranks-whole"] / wall["ranks-sharded"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
