"""Classification routes: KServe v1 `:predict` and the Open Inference Protocol v2."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from snowtrain.serve.model_dir import Task
from snowtrain.serve.schemas import InferRequest, PredictRequest
from snowtrain.serve.state import ServerState


def kserve_router(state: ServerState) -> APIRouter:
    """Routes for a classifier; on a language model they answer 400 naming the right API."""
    router = APIRouter()
    info = state.info

    # -- classification --------------------------------------------------------------------------
    @router.post("/v1/models/{name}:predict")
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        state.require(name, Task.CLASSIFICATION)
        texts = body.texts()
        state.check_texts(texts, "instances")
        results = await state.run(texts)
        return {
            "model_name": info.name,
            "predictions": [{"label": r.label, "scores": r.scores} for r in results],
        }

    @router.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        return {"live": state.load_error is None}

    @router.get("/v2/health/ready")
    async def v2_ready() -> JSONResponse:
        ok = state.ready and not state.draining
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

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

    return router
