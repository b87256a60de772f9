"""Classification routes: KServe v1 `:predict` and the Open Inference Protocol v2.

No `from __future__ import annotations` here: the body classes are built per server (they
carry its limits), so FastAPI must see the annotation objects, not names it cannot resolve.
"""

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from snowtrain.api.version import snowtrain_version
from snowtrain.serve.errors import ApiError
from snowtrain.serve.model_dir import Task
from snowtrain.serve.state import ServerState


def kserve_router(state: ServerState) -> APIRouter:
    """Routes for a classifier; on a language model they answer 400 naming the right API."""
    router = APIRouter()
    info = state.info
    PredictRequest = state.requests.predict
    InferRequest = state.requests.infer

    # -- classification --------------------------------------------------------------------------
    @router.post("/v1/models/{name}:predict")
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        state.require(name, Task.CLASSIFICATION)
        texts = body.texts()
        state.check_texts(texts, "instances")
        results = await state.run(texts, "instances")
        return {
            "model_name": info.name,
            "predictions": [{"label": r.label, "scores": r.scores} for r in results],
        }

    @router.post("/v1/models/{name}:explain")
    async def explain(name: str) -> None:
        """KServe v1 explain: not served (no explainer ships with the model)."""
        state.require(name, info.task)
        raise ApiError(501, "explanations are not served; use :predict for scores per label")

    @router.get("/")
    async def v1_live() -> dict[str, str]:
        """KServe v1 liveness: the process answers (readiness is /readyz)."""
        return {"status": "alive"}

    @router.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        return {"live": state.load_error is None}

    @router.get("/v2/health/ready")
    async def v2_ready() -> JSONResponse:
        ok = state.ready and not state.draining
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @router.get("/v2")
    async def v2_server_metadata() -> dict[str, Any]:
        """Open Inference Protocol server metadata."""
        return {"name": "snowtrain", "version": snowtrain_version(), "extensions": []}

    @router.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> JSONResponse:
        """Open Inference Protocol model readiness: 200 when ready, 503 while loading or
        draining (as KServe answers), 404 for a model this server does not serve."""
        state.require(name, info.task)
        ok = state.ready and not state.draining
        return JSONResponse({"name": info.name, "ready": ok}, status_code=200 if ok else 503)

    @router.get("/v2/models/{name}")
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

    @router.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, body: InferRequest) -> dict[str, Any]:
        state.require(name, Task.CLASSIFICATION)
        texts = body.inputs[0].data
        state.check_texts(texts, f"inputs[0] ({body.inputs[0].name}).data")
        results = await state.run(texts, "inputs[0].data")
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

    return router
