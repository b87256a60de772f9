"""`python -m snowtrain.serve --model-dir DIR ...` (README: "The model server").

uvicorn already shuts down gracefully on SIGTERM: it stops listening, lets in-flight
requests finish (up to --graceful-timeout), then runs the app's shutdown, which drains the
batcher. The subclass below adds one thing: the moment the signal arrives, /readyz turns 503
and new requests on open connections are refused with 503, so load balancers move away while
accepted work completes. A model that fails to load ends the process with status 1 and the
reason as its last line: the pod restarts visibly (and a canary is rolled back) at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from snowtrain.serve.model_dir import ModelDirError, inspect_model_dir
from snowtrain.serve.settings import (
    BATCHING_CHOICES,
    QUANTIZE_CHOICES,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    ServeSettings,
)

if TYPE_CHECKING:
    from snowtrain.serve.state import ServerState


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.begin_drain()
        super().handle_exit(sig, frame)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> ServeSettings:
    d = ServeSettings(model_dir=Path("."))
    p = argparse.ArgumentParser(
        prog="python -m snowtrain.serve",
        description="Serve an exported snowtrain model over HTTP: KServe v1 and Open Inference "
        "Protocol v2 for classifiers, OpenAI completions for language models.",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="exported model directory")
    p.add_argument("--name", help="served model name (default: snowtrain.json name or dir name)")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=_positive, default=d.port)
    p.add_argument("--max-batch-size", type=_positive, default=d.max_batch_size)
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms)
    p.add_argument("--max-queue", type=_positive, default=d.max_queue, help="429 beyond this")
    p.add_argument("--max-instances", type=_positive, default=d.max_instances, help="per request")
    p.add_argument("--max-input-chars", type=_positive, default=d.max_input_chars, help="per text")
    p.add_argument("--max-new-tokens", type=_positive, default=d.max_new_tokens)
    p.add_argument(
        "--max-stop-strings", type=_positive, default=d.max_stop_strings, help="per request"
    )
    p.add_argument(
        "--max-stop-chars", type=_positive, default=d.max_stop_chars, help="per stop string"
    )
    p.add_argument("--max-body-bytes", type=_positive, default=d.max_body_bytes)
    p.add_argument("--device", default=d.device, help="auto (CUDA if present), cpu, cuda, cuda:1")
    p.add_argument(
        "--threads", type=_positive, default=None, help="CPU threads (default: CPU quota)"
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        default=d.quantize,
        help="int8: dynamic int8 quantization of nn.Linear layers, CPU only (faster, scores "
        "differ slightly); default none",
    )
    p.add_argument(
        "--batching",
        choices=BATCHING_CHOICES,
        default=d.batching,
        help="completions: continuous (per decoding step) or lockstep (per generate call)",
    )
    p.add_argument(
        "--kv-cache-tokens",
        type=_positive,
        default=None,
        help="continuous batching: KV cache size in tokens (default: max-batch-size "
        "sequences of up to 1024 tokens)",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=_positive,
        default=None,
        help="continuous batching: most tokens per step (prefill chunk size)",
    )
    p.add_argument("--graceful-timeout", type=float, default=d.graceful_timeout_s)
    p.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get(TOKEN_FILE_ENV) or None,
        help=f"require `Authorization: Bearer <token>` with the token in this file (a mounted "
        f"Secret; default ${TOKEN_FILE_ENV}); ${TOKEN_ENV} gives the token itself. Health "
        "checks and /metrics stay open",
    )
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return ServeSettings(
            model_dir=a.model_dir,
            name=a.name,
            host=a.host,
            port=a.port,
            max_batch_size=a.max_batch_size,
            max_wait_ms=a.max_wait_ms,
            max_queue=a.max_queue,
            max_instances=a.max_instances,
            max_input_chars=a.max_input_chars,
            max_new_tokens=a.max_new_tokens,
            max_stop_strings=a.max_stop_strings,
            max_stop_chars=a.max_stop_chars,
            max_body_bytes=a.max_body_bytes,
            device=a.device,
            threads=a.threads,
            graceful_timeout_s=a.graceful_timeout,
            quantize=a.quantize,
            batching=a.batching,
            kv_cache_tokens=a.kv_cache_tokens,
            max_batch_tokens=a.max_batch_tokens,
            token_file=None if a.token_file is None else Path(a.token_file),
            token=os.environ.get(TOKEN_ENV) or None,
        )
    except ValueError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    # OpenMP threads that spin while waiting burn a pod's CPU quota and, on a shared node,
    # stall every batch behind a descheduled peer, so a forward can take many times longer
    # than it needs. Sleeping waiters cost little when the cores are ours. It must be
    # set before torch loads, which is why torch is imported below, not at the top.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        info = inspect_model_dir(settings.model_dir, settings.name)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from snowtrain.serve.app import create_app  # torch and transformers: import once needed
    from snowtrain.serve.auth import TokenError

    try:
        app = create_app(settings, info)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        log_config=None,  # keep the logging configured above
        access_log=False,
    )
    state: ServerState = app.state.serve
    server = DrainingServer(config, state)
    state.on_load_failed = lambda: setattr(server, "should_exit", True)
    server.run()
    if state.load_error is not None:
        # The last line is what the pod's termination message (its log's tail) shows.
        print(f"error: model failed to load: {state.load_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
