"""KServe's own REST client (kserve.InferenceRESTClient, a client nobody here wrote) against
the model server: every call it makes, in both protocols, answers what the client expects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.fixtures.models import LABELS
from tests.fixtures.serving import running_server

NAME = "tiny-classifier"
TEXTS = ["the movie was great", "terrible service"]


@pytest.fixture(scope="module")
def base(tiny_classifier_dir: Path) -> Iterator[str]:
    with running_server(tiny_classifier_dir) as url:
        yield url


def call(protocol: str, method: str, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol=protocol, retries=0, timeout=30))
        try:
            return await getattr(client, method)(*args, **kwargs)
        finally:
            await client.close()

    return asyncio.run(go())


def test_v1_liveness_model_readiness_and_predict(base: str) -> None:
    assert call("v1", "is_server_live", base) is True
    assert call("v1", "is_model_ready", base, NAME) is True
    answer = call("v1", "infer", base, {"instances": TEXTS}, model_name=NAME)
    assert [p["label"] in LABELS for p in answer["predictions"]] == [True, True]
    with pytest.raises(httpx.HTTPStatusError) as missing:
        call("v1", "is_model_ready", base, "not-this-one")
    assert missing.value.response.status_code == 404


def test_v1_explain_is_refused_clearly(base: str) -> None:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        call("v1", "explain", base, NAME, {"instances": TEXTS})
    assert refused.value.response.status_code == 501
    assert "explanations" in refused.value.response.json()["error"]["message"]


def test_v2_liveness_readiness_model_readiness_and_infer(base: str) -> None:
    assert call("v2", "is_server_live", base) is True
    assert call("v2", "is_server_ready", base) is True
    assert call("v2", "is_model_ready", base, NAME) is True
    assert call("v2", "is_model_ready", base, "not-this-one") is False
    text = InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS, dtype=object))
    response = call("v2", "infer", base, InferRequest(NAME, [text]), model_name=NAME)
    outputs = {o.name: o for o in response.outputs}
    labels = [x.decode() if isinstance(x, bytes) else x for x in outputs["label"].data]
    assert len(labels) == len(TEXTS) and set(labels) <= set(LABELS)
    assert outputs["scores"].shape == [len(TEXTS), len(LABELS)]


def test_v2_server_metadata(base: str) -> None:
    meta = httpx.get(f"{base}/v2").json()
    assert meta["name"] == "snowtrain" and meta["version"] and meta["extensions"] == []


def _binary(texts: list[bytes], *, size: int | None = None) -> tuple[bytes, dict[str, str]]:
    data = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
    head = {
        "inputs": [
            {
                "name": "text",
                "shape": [len(texts)],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(data) if size is None else size},
            }
        ]
    }
    header = json.dumps(head).encode()
    return header + data, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def test_binary_tensors_answer_as_json_tensors_do_and_bad_framing_is_a_400(base: str) -> None:
    url = f"{base}/v2/models/{NAME}/infer"
    body, headers = _binary([t.encode() for t in TEXTS])
    binary = httpx.post(url, content=body, headers=headers, timeout=30)
    plain = httpx.post(
        url,
        json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}]},
        timeout=30,
    )
    assert binary.status_code == plain.status_code == 200
    assert binary.json()["outputs"] == plain.json()["outputs"]
    for texts, size, expect in (
        ([b"ok", b"\xff\xfe"], None, "inputs[0].data[1] is not valid UTF-8"),
        ([b"ok"], 99, "binary_data_size does not fit"),
        ([b"ok"], 3, "truncated element length"),
    ):
        body, headers = _binary(texts, size=size)
        bad = httpx.post(url, content=body, headers=headers, timeout=30)
        assert bad.status_code == 400, bad.text
        assert expect in bad.json()["error"]["message"]
