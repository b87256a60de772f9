"""The HTTP application: health, metrics and model listing, plus the protocol routers.

The model loads in a background thread after startup so `/healthz` answers at once while
`/readyz` stays 503 until the weights are in memory. With a token configured, `auth` guards
every route but health checks and metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from snowtrain.serve.auth import BearerAuth, TokenSource
from snowtrain.serve.binary_tensors import BinaryTensors
from snowtrain.serve.completions import completions_router
from snowtrain.serve.errors import ApiError, BodySizeLimit, error_response, install_error_handlers
from snowtrain.serve.kserve import kserve_router
from snowtrain.serve.metrics import LatencyMiddleware
from snowtrain.serve.model_dir import ModelInfo, inspect_model_dir
from snowtrain.serve.settings import ServeSettings
from snowtrain.serve.state import ServerState

__all__ = ["ServeSettings", "ServerState", "create_app"]


def create_app(settings: ServeSettings, info: ModelInfo | None = None) -> FastAPI:
    """Build the ASGI app for one model directory (the model loads once the app starts).

    Raises auth.TokenError when a token is configured but unusable (fail at start, not on
    the first request).
    """
    info = info or inspect_model_dir(settings.model_dir, settings.name)
    tokens = (
        TokenSource(token=settings.token, path=settings.token_file)
        if settings.auth_enabled
        else None
    )
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
    # Innermost first: binary tensor requests are decoded under the body size limit.
    app.add_middleware(BinaryTensors)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    if tokens is not None:  # outside the size limit: no token, no body read
        app.add_middleware(BearerAuth, tokens=tokens)
    app.add_middleware(LatencyMiddleware, metrics=state.metrics)
    install_error_handlers(app, settings.max_body_bytes)

    # -- health and metrics ----------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if state.load_error is not None:
            return error_response(500, f"model failed to load: {state.load_error}")
        if state.engine_failed:
            return error_response(500, "the generation engine stopped")
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
    async def model_status(name: str) -> JSONResponse:
        if name != info.name:
            raise ApiError(404, f"model {name!r} not found; this server serves {info.name!r}")
        # KServe v1: 503 while not ready (its client reads that as "not ready").
        ready = state.ready and not state.draining
        body = {"name": info.name, "ready": ready, **model_card()}
        return JSONResponse(body, status_code=200 if ready else 503)

    app.include_router(kserve_router(state))
    app.include_router(completions_router(state))
    return app
