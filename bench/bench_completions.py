"""Completions benchmark: continuous batching against lockstep batching and against
one-request-at-a-time `generate`, on the same causal LM, in one run.

The model is a GPT-2 (6 layers, 512 wide, 1024 positions; `--layers 12 --width 768` on a GPU) with a byte-level BPE tokenizer
of 8192 tokens trained here (the Hugging Face hub is out of reach, and what is measured is
scheduling, not text quality). Three servers, the same CPU threads and OpenMP policy:

- ``continuous``: ``python -m snowtrain.serve`` (the default: continuous batching on
  transformers' engine);
- ``lockstep``: the same server with ``--batching lockstep``, i.e. batches through
  ``generate`` until their longest request ends (the server before continuous batching);
- ``single``: a plain FastAPI endpoint streaming one ``model.generate`` at a time with
  transformers' ``TextIteratorStreamer``, as transformers' docs show streaming (requests
  wait on a lock: one generation at a time).

Closed loop: C clients each stream one completion after another for ``--duration`` seconds,
greedy, with a deterministic mix of prompt lengths (10 to 300 words) and ``max_tokens`` (16
to 192). Per server and concurrency: generated tokens per second (the streamed text
re-tokenized by the client, the same count for every server; text that arrived inside the
window counts, whether or not its request finished), p50/p99 time to first token (first
streamed text, of every request whose first text arrived inside the window), p99 latency of
the requests that finished inside it. When the window closes the clients hang up, and the
next measurement starts only once the server is idle again.

    .venv/bin/python -m bench.bench_completions [--duration 20] [--levels 1 8 32]

Prints a table, the continuous/lockstep and continuous/single ratios and the load average,
and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_serve
from bench.bench_serve import percentile

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench-lm"
WORDS = [
    "the",
    "model",
    "was",
    "trained",
    "on",
    "data",
    "that",
    "lives",
    "in",
    "the",
    "warehouse",
    "and",
    "it",
    "answers",
    "questions",
    "about",
    "orders",
    "customers",
    "shipments",
    "and",
    "the",
    "weather",
    "of",
    "next",
    "week",
    "before",
    "lunch",
]


def workload(n: int = 400, seed: int = 0) -> list[tuple[str, int]]:
    """(prompt, max_tokens) pairs: prompts of 10 to 300 words, outputs of 16 to 192 tokens."""
    rng = random.Random(seed)
    return [
        (" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 300))), rng.randint(16, 192))
        for _ in range(n)
    ]


def export_lm(out: Path, layers: int = 6, width: int = 512) -> Path:
    """A random-weight GPT-2 and a BPE tokenizer of 8192 tokens trained on the workload's
    words (the tests' model builder, larger)."""
    from tests.fixtures.models import build_tiny_causal_lm

    rng = random.Random(1)
    corpus = [
        " ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(50))
        for _ in range(2000)
    ]
    return build_tiny_causal_lm(
        out,
        name=NAME,
        n_positions=1024,
        layers=layers,
        width=width,
        heads=width // 64,
        vocab_size=8192,
        corpus=corpus,
    )


# -- the one-at-a-time server ------------------------------------------------------------------


def run_single(model_dir: str, port: int, threads: int) -> None:
    """Stream `model.generate` with TextIteratorStreamer, one generation at a time."""
    import threading

    import torch
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # as ours picks (--device auto)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    lock = threading.Lock()
    app = FastAPI()
    busy = [0]

    @app.get("/readyz")
    def ready() -> dict[str, Any]:
        return {"status": "ready", "busy": busy[0]}

    @app.post("/v1/completions")
    def complete(body: dict) -> StreamingResponse:
        inputs = tokenizer(body["prompt"], return_tensors="pt").to(device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        def generate() -> None:
            busy[0] += 1
            try:
                with lock, torch.inference_mode():
                    model.generate(
                        **inputs,
                        max_new_tokens=body["max_tokens"],
                        do_sample=False,
                        streamer=streamer,
                    )
            finally:
                busy[0] -= 1

        threading.Thread(target=generate, daemon=True).start()

        def events() -> Any:
            for text in streamer:
                if text:
                    yield "data: " + json.dumps({"choices": [{"text": text}]}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- servers and load ---------------------------------------------------------------------------


class Server(bench_serve.Server):
    """`continuous` and `lockstep`: ours in that batching mode; `single`: run_single."""

    def command(self, model_dir: Path, threads: int, extra: tuple[str, ...]) -> list[str]:
        if self.kind == "single":
            args = ["--single-server", str(model_dir), str(self.port), str(threads)]
            return [sys.executable, "-m", "bench.bench_completions", *args]
        return self.ours(model_dir, threads, batching=self.kind, max_new_tokens=256, max_queue=1024)

    def wait_idle(self, timeout: float = 600) -> None:
        """Until abandoned requests are done (ours cancel them; `single` runs them out)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kind == "single":
                if httpx.get(f"{self.url}/readyz", timeout=10).json()["busy"] == 0:
                    return
            else:
                metrics = httpx.get(f"{self.url}/metrics", timeout=10).text
                line = next(
                    x
                    for x in metrics.splitlines()
                    if x.startswith("snowtrain_requests_in_progress")
                )
                if float(line.split()[1]) <= 1:  # this metrics request itself
                    return
            time.sleep(0.5)


async def closed_loop(
    url: str, concurrency: int, duration: float, work: list[tuple[str, int]], count: Any
) -> dict:
    """`concurrency` clients streaming one completion after another."""
    import aiohttp

    ttfts: list[float] = []
    latencies: list[float] = []
    tokens = 0
    errors = 0
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as client:
        stop_at = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal tokens, errors
            i = w
            while time.perf_counter() < stop_at:
                prompt, max_tokens = work[i % len(work)]
                i += concurrency
                body = {
                    "prompt": prompt,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "stream": True,
                }
                start = time.perf_counter()
                first: float | None = None
                text = ""
                try:
                    async with client.post(f"{url}/v1/completions", json=body) as r:
                        if r.status != 200:
                            errors += 1
                            await r.read()
                            continue
                        async for raw in r.content:
                            line = raw.decode().strip()
                            if not line.startswith("data: {"):
                                continue
                            if time.perf_counter() > stop_at:
                                break  # the window closed: hang up
                            piece = json.loads(line[6:])["choices"][0].get("text", "")
                            if piece and first is None:
                                first = time.perf_counter() - start
                                ttfts.append(first)
                            text += piece
                except aiohttp.ClientError:
                    errors += 1
                    continue
                tokens += count(text)  # what arrived inside the window, finished or not
                if time.perf_counter() <= stop_at:
                    latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker(w) for w in range(concurrency)), return_exceptions=True),
            timeout=duration + 120,
        )
        elapsed = min(time.perf_counter() - started, duration)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "tokens_per_s": tokens / elapsed,
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p99_ms": percentile(ttfts, 99) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--servers", nargs="+", default=["continuous", "lockstep", "single"])
    p.add_argument("--layers", type=int, default=6, help="GPT-2 layers (12 on a GPU: ~gpt2)")
    p.add_argument("--width", type=int, default=512, help="GPT-2 width (768 on a GPU)")
    p.add_argument("--single-server", nargs=3, metavar=("DIR", "PORT", "THREADS"))
    a = p.parse_args(argv)
    if a.single_server:
        run_single(a.single_server[0], int(a.single_server[1]), int(a.single_server[2]))
        return 0

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export_lm(Path(tmp) / "lm", a.layers, a.width)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)

        def count(text: str) -> int:
            return len(tokenizer(text)["input_ids"]) if text else 0

        work = workload()
        servers = {kind: Server(kind, model_dir, a.threads) for kind in a.servers}
        results: dict[str, list[dict]] = {kind: [] for kind in servers}
        load = []
        try:
            for s in servers.values():
                s.wait_ready()
                asyncio.run(closed_loop(s.url, 2, 3.0, work, count))  # warm up
                s.wait_idle()
            for c in a.levels:
                for kind, s in servers.items():
                    r = asyncio.run(closed_loop(s.url, c, a.duration, work, count))
                    load.append(os.getloadavg()[0])
                    s.wait_idle()
                    results[kind].append(r)
                    print(
                        f"{kind:>10} c={c:<3} {r['tokens_per_s']:8.1f} tok/s  TTFT p50 "
                        f"{r['ttft_p50_ms']:8.0f} ms p99 {r['ttft_p99_ms']:8.0f} ms  latency p99 "
                        f"{r['latency_p99_ms']:8.0f} ms  requests {r['requests']:4d} errors "
                        f"{r['errors']}",
                        flush=True,
                    )
        finally:
            for s in servers.values():
                s.stop()

    ratios: dict[str, list[dict]] = {}
    ours = results.get("continuous")
    for other in ("lockstep", "single"):
        if ours is None or other not in results:
            continue
        ratios[other] = []
        print(f"continuous vs {other}:")
        for o, b in zip(ours, results[other], strict=True):
            ratio = {
                "concurrency": o["concurrency"],
                "tokens_per_s_x": o["tokens_per_s"] / b["tokens_per_s"],
                "ttft_p99_x_lower": b["ttft_p99_ms"] / o["ttft_p99_ms"],
                "latency_p99_x_lower": b["latency_p99_ms"] / o["latency_p99_ms"],
            }
            ratios[other].append(ratio)
            print(
                f"  c={o['concurrency']:<3} tokens/s {ratio['tokens_per_s_x']:5.2f}x   TTFT p99 "
                f"{ratio['ttft_p99_x_lower']:5.2f}x lower   latency p99 "
                f"{ratio['latency_p99_x_lower']:5.2f}x lower"
            )
    summary = {
        "results": results,
        "ratios": ratios,
        "load_average": {"min": min(load), "max": max(load)} if load else None,
    }
    print(f"load average (1 min) during the run: {min(load):.2f} to {max(load):.2f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
