"""Prometheus metrics of one server, in a registry of its own.

A registry per app (not the process-global default) lets tests run several servers in one
process and keeps /metrics free of anything but this server's series. Request latency is
measured by a small ASGI middleware so that streamed responses count until their last byte.
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_WINDOW_S = 5.0
"""Continuous batching has no batches to time: its tokens per second is over this window."""


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "snowtrain_request_duration_seconds",
            "Time from request to last response byte.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_requests = 0
        """HTTP requests being handled now (the gauge below, readable without the registry);
        only touched on the event loop."""
        self.requests_in_progress = Gauge(
            "snowtrain_requests_in_progress", "HTTP requests being served.", registry=r
        )
        self.batch_size = Histogram(
            "snowtrain_batch_size", "Items per model batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "snowtrain_batch_duration_seconds",
            "Model time per batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "snowtrain_queue_depth", "Items waiting for a batch slot.", registry=r
        )
        self.rejected = Counter(
            "snowtrain_rejected_requests_total",
            "Requests refused before reaching the model.",
            ["reason"],
            registry=r,
        )
        self.items = Counter(
            "snowtrain_inference_items_total",
            "Instances classified or prompts completed.",
            registry=r,
        )
        self.prompt_tokens = Counter(
            "snowtrain_prompt_tokens_total", "Prompt tokens processed.", registry=r
        )
        self.generated_tokens = Counter(
            "snowtrain_generated_tokens_total",
            "Completion tokens generated; rate() of it is tokens per second.",
            registry=r,
        )

        self.tokens_per_second = Gauge(
            "snowtrain_generation_tokens_per_second",
            "Completion tokens per second of the latest batch, or of the last few seconds "
            "with continuous batching (what a dashboard shows at a glance; "
            "rate(snowtrain_generated_tokens_total) is the precise figure).",
            registry=r,
        )

        self._recent_tokens: deque[tuple[float, int]] = deque()

    def observe_tokens(self, count: int) -> None:
        """Tokens one continuous batching step produced for one request."""
        now = time.monotonic()
        recent = self._recent_tokens
        recent.append((now, count))
        while recent and recent[0][0] < now - RATE_WINDOW_S:
            recent.popleft()
        span = max(now - recent[0][0], 1.0)  # a first burst is not a rate yet
        self.tokens_per_second.set(sum(n for _, n in recent) / span)

    def observe_batch(self, size: int, seconds: float, generated: int | None = None) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)
        if generated is not None and seconds > 0:
            self.tokens_per_second.set(generated / seconds)


class LatencyMiddleware:
    """Observe every HTTP request's duration (to its last byte) by route template."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.requests_in_progress.inc()
        self.metrics.active_requests += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests_in_progress.dec()
            self.metrics.active_requests -= 1
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(path, scope["method"], str(status)).observe(
                time.perf_counter() - start
            )
