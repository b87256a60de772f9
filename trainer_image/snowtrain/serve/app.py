"""The HTTP application: routes of the KServe v1, Open Inference Protocol v2 and OpenAI APIs.

Routes validate and size-check requests, then hand items to the DynamicBatcher and wait;
they never touch the model directly. The model loads in a background thread after startup so
`/healthz` answers at once while `/readyz` stays 503 until the weights are in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from snowtrain.serve.batcher import DynamicBatcher, NotAccepting, QueueFull
from snowtrain.serve.errors import (
    ApiError,
    BodySizeLimit,
    error_body,
    error_response,
    install_error_handlers,
)
from snowtrain.serve.generation import Completion, CompletionItem
from snowtrain.serve.metrics import LatencyMiddleware, ServerMetrics
from snowtrain.serve.model_dir import ModelInfo, Task, inspect_model_dir
from snowtrain.serve.models import ClassifierModel, CompletionModel, build_model
from snowtrain.serve.runtime import choose_runtime
from snowtrain.serve.schemas import CompletionRequest, InferRequest, PredictRequest
from snowtrain.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class ServerState:
    """What the routes share: the model, its batcher, metrics, and the lifecycle flags."""

    def __init__(self, settings: ServeSettings, info: ModelInfo) -> None:
        self.settings = settings
        self.info = info
        self.metrics = ServerMetrics()
        self.model: ClassifierModel | CompletionModel | None = None
        self.batcher: DynamicBatcher[Any, Any] | None = None
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.metrics.queue_depth.set_function(
            lambda: self.batcher.queued if self.batcher is not None else 0
        )

    def begin_drain(self) -> None:
        """SIGTERM: report not ready and refuse new work; accepted work still completes."""
        self.draining = True
        if self.batcher is not None:
            self.batcher.stop_accepting()

    async def load(self) -> None:
        try:
            runtime = choose_runtime(self.settings.device, self.settings.threads)
            model = build_model(self.info, runtime)
            await asyncio.to_thread(model.load)
        except Exception as exc:
            log.exception("loading %s failed", self.info.path)
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        batcher: DynamicBatcher[Any, Any] = DynamicBatcher(
            model.predict,
            max_batch_size=self.settings.max_batch_size,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.max_queue,
            # Runs on the event loop once the worker thread is idle again, so reading the
            # model's last batch token count here is race-free.
            on_batch=lambda n, s: self.metrics.observe_batch(
                n, s, getattr(model, "last_generated_tokens", None)
            ),
            name=f"model-{self.info.name}",
        )
        await batcher.start()
        self.model, self.batcher = model, batcher
        if self.draining:
            batcher.stop_accepting()
        self.ready = True
        log.info("model %s (%s) ready on %s", self.info.name, self.info.task, runtime.device)

    # -- helpers used by the routes ------------------------------------------------------
    def require(self, name: str | None, task: Task) -> None:
        """404 for a name this server does not serve; 400 when the model has another task."""
        if name is not None and name != self.info.name:
            raise ApiError(404, f"model {name!r} not found; this server serves {self.info.name!r}")
        if task is not self.info.task:
            other = (
                "POST /v1/completions"
                if self.info.task is Task.COMPLETION
                else f"POST /v1/models/{self.info.name}:predict or /v2/models/{self.info.name}/infer"
            )
            raise ApiError(
                400, f"model {self.info.name!r} is a {self.info.task} model; use {other}"
            )

    def check_texts(self, texts: Sequence[str], field: str) -> None:
        s = self.settings
        if len(texts) > s.max_instances:
            raise ApiError(
                413,
                f"{field} has {len(texts)} items; this server accepts at most {s.max_instances}",
            )
        for i, text in enumerate(texts):
            if not text.strip():
                raise ApiError(400, f"{field}[{i}] is empty")
            if len(text) > s.max_input_chars:
                raise ApiError(
                    413,
                    f"{field}[{i}] is {len(text)} characters; the limit is {s.max_input_chars}",
                )

    def ensure_ready(self) -> None:
        """503 while the model is loading, failed to load, or the server is draining."""
        if self.load_error is not None:
            raise ApiError(503, "model failed to load")
        if not self.ready or self.batcher is None:
            raise ApiError(503, "model is still loading", {"Retry-After": "1"})
        if self.draining:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "server is shutting down")

    def submit_nowait(self, items: Sequence[Any]) -> list[asyncio.Future[Any]]:
        """Enqueue or answer 503 (loading, draining) / 429 (queue full) right away."""
        self.ensure_ready()
        assert self.batcher is not None
        try:
            return self.batcher.submit_nowait(items)
        except QueueFull as exc:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, str(exc), {"Retry-After": "1"}) from exc
        except NotAccepting as exc:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "server is shutting down") from exc

    async def run(self, items: Sequence[Any]) -> list[Any]:
        futures = self.submit_nowait(items)
        try:
            results = await asyncio.gather(*futures)
        except NotAccepting as exc:
            raise ApiError(503, "server is shutting down") from exc
        except ApiError:
            raise
        except Exception as exc:
            log.exception("inference failed")
            raise ApiError(500, f"inference failed: {type(exc).__name__}") from exc
        finally:
            for fut in futures:
                fut.cancel()  # no-op when done; drops queued items if the client went away
        self.metrics.items.inc(len(items))
        return list(results)


def create_app(settings: ServeSettings, info: ModelInfo | None = None) -> FastAPI:
    """Build the ASGI app for one model directory (the model loads once the app starts)."""
    info = info or inspect_model_dir(settings.model_dir, settings.name)
    state = ServerState(settings, info)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(state.load())
        yield
        state.begin_drain()
        loader.cancel()
        if state.batcher is not None:
            await state.batcher.close(timeout=settings.graceful_timeout_s)

    app = FastAPI(
        title="snowtrain model server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.serve = state
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=state.metrics)
    install_error_handlers(app, settings.max_body_bytes)

    # -- health and metrics ----------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if state.load_error is not None:
            return error_response(500, f"model failed to load: {state.load_error}")
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.draining:
            return error_response(503, "draining: the server is shutting down")
        if state.load_error is not None:
            return error_response(503, f"model failed to load: {state.load_error}")
        if not state.ready:
            return error_response(503, "model is still loading")
        return JSONResponse({"status": "ready", "model": info.name})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- model listing -------------------------------------------------------------------------
    def model_card() -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": info.name,
            "object": "model",
            "created": int(info.path.stat().st_mtime),
            "owned_by": "snowtrain",
            "task": str(info.task),
            "ready": state.ready,
        }
        if info.labels is not None:
            card["labels"] = info.labels
        return card

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        # OpenAI clients read `data`, KServe v1 clients read `models`: one answer serves both.
        return {"object": "list", "data": [model_card()], "models": [info.name]}

    @app.get("/v1/models/{name}")
    async def model_status(name: str) -> dict[str, Any]:
        if name != info.name:
            raise ApiError(404, f"model {name!r} not found; this server serves {info.name!r}")
        return {"name": info.name, "ready": state.ready, **model_card()}

    # -- classification --------------------------------------------------------------------------
    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        state.require(name, Task.CLASSIFICATION)
        texts = body.texts()
        state.check_texts(texts, "instances")
        results = await state.run(texts)
        return {
            "model_name": info.name,
            "predictions": [{"label": r.label, "scores": r.scores} for r in results],
        }

    @app.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        return {"live": state.load_error is None}

    @app.get("/v2/health/ready")
    async def v2_ready() -> JSONResponse:
        ok = state.ready and not state.draining
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}")
    async def v2_metadata(name: str) -> dict[str, Any]:
        state.require(name, Task.CLASSIFICATION)
        n = len(info.labels or [])
        return {
            "name": info.name,
            "versions": [],
            "platform": "pytorch_transformers",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, n]},
            ],
            "parameters": {"labels": info.labels},
        }

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, body: InferRequest) -> dict[str, Any]:
        state.require(name, Task.CLASSIFICATION)
        texts = body.inputs[0].data
        state.check_texts(texts, f"inputs[0] ({body.inputs[0].name}).data")
        results = await state.run(texts)
        labels = info.labels or []
        return {
            "model_name": info.name,
            "model_version": None,
            "id": body.id or uuid.uuid4().hex,
            "parameters": {"labels": labels},
            "outputs": [
                {
                    "name": "label",
                    "datatype": "BYTES",
                    "shape": [len(results)],
                    "data": [r.label for r in results],
                },
                {
                    "name": "scores",
                    "datatype": "FP32",
                    "shape": [len(results), len(labels)],
                    "data": [r.scores[lab] for r in results for lab in labels],
                },
            ],
        }

    # -- completions ---------------------------------------------------------------------------
    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Response | dict:
        state.require(body.model, Task.COMPLETION)
        prompts = body.prompts()
        state.check_texts(prompts, "prompt")
        if body.max_tokens > settings.max_new_tokens:
            raise ApiError(
                400,
                f"max_tokens {body.max_tokens} exceeds this server's limit of "
                f"{settings.max_new_tokens}",
            )
        state.ensure_ready()
        model = state.model
        assert isinstance(model, CompletionModel)
        counts = [model.count_tokens(p) for p in prompts]
        for i, n in enumerate(counts):
            if n + body.max_tokens > model.context_length:
                raise ApiError(
                    400,
                    f"prompt[{i}] is {n} tokens and max_tokens is {body.max_tokens}, but the "
                    f"model's context holds {model.context_length} tokens",
                )
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": info.name,
                "choices": [
                    {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
                ],
            }

        def account(results: Sequence[Completion]) -> None:
            state.metrics.items.inc(len(results))
            state.metrics.prompt_tokens.inc(sum(r.prompt_tokens for r in results))
            state.metrics.generated_tokens.inc(sum(r.completion_tokens for r in results))

        def make_items(on_text: Any = None) -> list[CompletionItem]:
            return [
                CompletionItem(
                    prompt=p,
                    max_tokens=body.max_tokens,
                    temperature=body.temperature,
                    top_p=body.top_p,
                    stop=body.stops(),
                    on_text=on_text(i) if on_text else None,
                )
                for i, p in enumerate(prompts)
            ]

        if not body.stream:
            items = make_items()
            futures = state.submit_nowait(items)
            try:
                results: list[Completion] = list(await asyncio.gather(*futures))
            except NotAccepting as exc:
                raise ApiError(503, "server is shutting down") from exc
            except Exception as exc:
                log.exception("generation failed")
                raise ApiError(500, f"generation failed: {type(exc).__name__}") from exc
            finally:
                for it, fut in zip(items, futures, strict=True):
                    it.cancelled.set()
                    fut.cancel()
            account(results)
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": info.name,
                "choices": [
                    {"text": r.text, "index": i, "logprobs": None, "finish_reason": r.finish_reason}
                    for i, r in enumerate(results)
                ],
                "usage": {
                    "prompt_tokens": sum(r.prompt_tokens for r in results),
                    "completion_tokens": sum(r.completion_tokens for r in results),
                    "total_tokens": sum(r.prompt_tokens + r.completion_tokens for r in results),
                },
            }

        # Streaming: the worker thread pushes text pieces into this request's queue.
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

        def on_text(index: int) -> Any:
            return lambda text: loop.call_soon_threadsafe(events.put_nowait, (index, text))

        items = make_items(on_text)
        futures = state.submit_nowait(items)  # 429/503 happen here, before the stream starts
        for i, fut in enumerate(futures):
            fut.add_done_callback(lambda _f, i=i: events.put_nowait((i, None)))

        async def stream() -> AsyncIterator[str]:
            pending = len(futures)
            done: list[Completion] = []
            try:
                while pending:
                    index, text = await events.get()
                    if text is not None:
                        yield "data: " + json.dumps(chunk(index, text, None)) + "\n\n"
                        continue
                    pending -= 1
                    fut = futures[index]
                    if fut.cancelled() or fut.exception() is not None:
                        exc = None if fut.cancelled() else fut.exception()
                        msg = (
                            "server is shutting down"
                            if isinstance(exc, NotAccepting)
                            else "generation failed"
                        )
                        log.error("stream %s failed: %r", completion_id, exc)
                        yield "data: " + json.dumps(error_body(500, msg)) + "\n\n"
                        continue
                    result = fut.result()
                    done.append(result)
                    yield "data: " + json.dumps(chunk(index, "", result.finish_reason)) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                account(done)
                for it, fut in zip(items, futures, strict=True):
                    if not fut.done():
                        # The client went away: its rows stop at the next decoding step
                        # (queued ones after one step), and the tokens they did generate
                        # still count once the batch returns.
                        it.cancelled.set()
                        fut.add_done_callback(
                            lambda f: (
                                account([f.result()])
                                if not f.cancelled() and f.exception() is None
                                else None
                            )
                        )

        return EventSourceResponse(stream(), headers={"Cache-Control": "no-cache"})

    return app
