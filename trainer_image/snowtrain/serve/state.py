"""What every route shares: the model, its batcher, the metrics, and the lifecycle.

Routes validate and size-check requests, then hand items to the DynamicBatcher through this
object and wait; they never touch the model directly. It also owns the answers that do not
depend on the protocol: 404 for a name this server does not serve, 413 for oversize input,
503 while loading or draining, 429 when the queue is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from snowtrain.serve.batcher import DynamicBatcher, NotAccepting, QueueFull
from snowtrain.serve.continuous import ContinuousGenerator
from snowtrain.serve.errors import ApiError
from snowtrain.serve.metrics import ServerMetrics
from snowtrain.serve.model_dir import ModelInfo, Task
from snowtrain.serve.models import ClassifierModel, CompletionModel, InvalidInput, build_model
from snowtrain.serve.runtime import choose_runtime
from snowtrain.serve.schemas import RequestLimits, RequestModels, request_models
from snowtrain.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class ServerState:
    """What the routes share: the model, its batcher, metrics, and the lifecycle flags."""

    def __init__(self, settings: ServeSettings, info: ModelInfo) -> None:
        self.settings = settings
        self.info = info
        self.requests: RequestModels = request_models(RequestLimits.from_settings(settings))
        """Request body classes bounded by this server's limits (what the routes parse)."""
        self.metrics = ServerMetrics()
        self.model: ClassifierModel | CompletionModel | None = None
        self.batcher: DynamicBatcher[Any, Any] | ContinuousGenerator | None = None
        """Where items go: the dynamic batcher, or for completions by default the
        continuous batching engine (same interface)."""
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.on_load_failed: Callable[[], None] | None = None
        """Called once the load failed: the server process ends (a pod that cannot serve
        should restart visibly now, not when its startup probe gives up)."""
        self.metrics.queue_depth.set_function(
            lambda: self.batcher.queued if self.batcher is not None else 0
        )

    def _failed(self, why: str) -> None:
        self.load_error = why
        if self.on_load_failed is not None:
            self.on_load_failed()

    def begin_drain(self) -> None:
        """SIGTERM: report not ready and refuse new work; accepted work still completes."""
        self.draining = True
        if self.batcher is not None:
            self.batcher.stop_accepting()

    async def load(self) -> None:
        try:
            runtime = choose_runtime(
                self.settings.device, self.settings.threads, self.settings.quantize
            )
            model = build_model(self.info, runtime)
            await asyncio.to_thread(model.load)
        except Exception as exc:
            log.exception("loading %s failed", self.info.path)
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        try:
            batcher = self._scheduler_for(model)
            await batcher.start()
        except Exception as exc:
            log.exception("starting the %s scheduler failed", self.settings.batching)
            why = f"{type(exc).__name__}: {exc}"
            if isinstance(model, CompletionModel) and self.settings.batching == "continuous":
                why += " (--batching lockstep serves without the continuous engine)"
            self._failed(why)
            return
        self.model, self.batcher = model, batcher
        if self.draining:
            batcher.stop_accepting()
        self.ready = True
        log.info(
            "model %s (%s) ready on %s (quantize %s)",
            self.info.name,
            self.info.task,
            runtime.device,
            runtime.quantize,
        )

    def _scheduler_for(
        self, model: ClassifierModel | CompletionModel
    ) -> DynamicBatcher[Any, Any] | ContinuousGenerator:
        """Continuous batching for completions (unless --batching lockstep), else the
        dynamic batcher around the model's batch predict."""
        s = self.settings
        if isinstance(model, CompletionModel) and s.batching == "continuous":
            return ContinuousGenerator(
                model,
                max_batch_size=s.max_batch_size,
                max_queue=s.max_queue,
                kv_cache_tokens=s.kv_cache_tokens,
                max_batch_tokens=s.max_batch_tokens,
                on_tokens=self.metrics.observe_tokens,
            )
        return DynamicBatcher(
            model.predict,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            # Runs on the event loop once the worker thread is idle again, so reading the
            # model's last batch token count here is race-free.
            on_batch=lambda n, sec: self.metrics.observe_batch(
                n, sec, getattr(model, "last_generated_tokens", None)
            ),
            # Requests in progress beyond the ones this batch holds are on their way to the
            # queue: worth waiting max_wait_ms for (see DynamicBatcher on `more_coming`).
            more_coming=lambda items: self.metrics.active_requests > items,
            name=f"model-{self.info.name}",
        )

    @property
    def engine_failed(self) -> bool:
        """The continuous batching engine died after loading (the pod should restart)."""
        b = self.batcher
        return isinstance(b, ContinuousGenerator) and self.ready and not b.healthy

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
        if self.engine_failed:
            raise ApiError(503, "the generation engine stopped; the server needs a restart")
        if self.draining:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "server is shutting down")

    def submit_nowait(
        self, items: Sequence[Any], admitted: bool = False
    ) -> list[asyncio.Future[Any]]:
        """Enqueue or answer 503 (loading, draining) / 429 (queue full) right away.

        ``admitted``: the route passed :meth:`ensure_ready` before an ``await`` (it counted
        tokens off the event loop); a drain that began meanwhile must not refuse it, since
        accepted work is completed.
        """
        if not admitted:
            self.ensure_ready()
        assert self.batcher is not None
        try:
            return self.batcher.submit_nowait(items, admitted=admitted)
        except QueueFull as exc:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, str(exc), {"Retry-After": "1"}) from exc
        except NotAccepting as exc:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "server is shutting down") from exc

    async def run(self, items: Sequence[Any], field: str = "instances") -> list[Any]:
        """Run `items` through the batcher; the first failing item decides the answer.

        An item the model could not tokenize answers 400 naming `field[index]`; other
        failures are the server's (500). Items batched with another request's bad item are
        unaffected: the batcher isolates it.
        """
        futures = self.submit_nowait(items)
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for fut in futures:
                fut.cancel()  # no-op when done; drops queued items if the client went away
        for i, res in enumerate(results):
            if isinstance(res, BaseException):
                raise item_error(res, f"{field}[{i}]") from res
        self.metrics.items.inc(len(items))
        return list(results)


def item_error(exc: BaseException, where: str) -> ApiError:
    """The HTTP answer for one failed batcher item (logging the server's own failures)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotAccepting | asyncio.CancelledError):
        return ApiError(503, "server is shutting down")
    if isinstance(exc, InvalidInput):
        return ApiError(400, f"{where}: {exc}")
    log.error("inference failed for %s", where, exc_info=exc)
    return ApiError(500, f"inference failed: {type(exc).__name__}")
