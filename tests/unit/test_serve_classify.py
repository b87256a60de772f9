"""The server on a tiny exported classifier: KServe v1, OIP v2, health, metrics and errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.models import LABELS
from tests.fixtures.serving import running_server

NAME = "tiny-classifier"
TEXTS = ["the movie was great", "terrible service", "an ordinary afternoon", "wonderful " * 20]


@pytest.fixture(scope="module")
def base(tiny_classifier_dir: Path) -> Iterator[str]:
    with running_server(
        tiny_classifier_dir,
        max_wait_ms=20,
        max_instances=8,
        max_input_chars=500,
        max_body_bytes=20_000,
    ) as url:
        yield url


def predict(base: str, payload: object, name: str = NAME) -> httpx.Response:
    return httpx.post(f"{base}/v1/models/{name}:predict", json=payload, timeout=30)


def error_message(resp: httpx.Response) -> str:
    body = resp.json()
    assert body["error"]["code"] == resp.status_code
    return body["error"]["message"]


def test_health_readiness_and_model_list(base: str) -> None:
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200
    models = httpx.get(f"{base}/v1/models").json()
    assert models["models"] == [NAME]
    (card,) = models["data"]
    assert (card["id"], card["task"], card["labels"], card["ready"]) == (
        NAME,
        "classification",
        LABELS,
        True,
    )
    assert httpx.get(f"{base}/v1/models/{NAME}").json()["ready"] is True
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}


def test_v1_predict_returns_a_label_and_a_distribution_per_instance(base: str) -> None:
    resp = predict(base, {"instances": [TEXTS[0], {"text": TEXTS[1]}]})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert len(preds) == 2
    for p in preds:
        assert list(p["scores"]) == LABELS
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["scores"], key=p["scores"].get)


def test_batching_does_not_change_answers(base: str) -> None:
    """Texts of different lengths padded into one batch score as they do alone."""
    alone = [predict(base, {"instances": [t]}).json()["predictions"][0] for t in TEXTS]
    together = predict(base, {"instances": TEXTS}).json()["predictions"]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda t: predict(base, {"instances": [t]}), TEXTS * 2))
    for a, b in zip(alone, together, strict=True):
        assert a["label"] == b["label"]
        for lab in LABELS:
            assert a["scores"][lab] == pytest.approx(b["scores"][lab], abs=1e-4)
    for resp, a in zip(concurrent, alone * 2, strict=True):
        assert resp.json()["predictions"][0]["label"] == a["label"]


def test_concurrent_requests_are_served_in_shared_batches(
    tiny_classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that wait while the model is busy go through it together, in one batch.

    A gate holds the model on a first request until the other 16 are queued, so the batch
    they form does not depend on how fast the clients' threads happen to send them.
    """
    from snowtrain.serve.models import ClassifierModel

    entered, gate = threading.Event(), threading.Event()
    classify = ClassifierModel.predict

    def gated_predict(self: ClassifierModel, texts: list[str]) -> list:
        if "hold the model" in texts:
            entered.set()
            assert gate.wait(120), "the test never opened the gate"
        return classify(self, texts)

    # load() binds model.predict after this, so only this test's server is gated.
    monkeypatch.setattr(ClassifierModel, "predict", gated_predict)

    def samples(url: str, *names: str) -> list[float]:
        metrics = httpx.get(f"{url}/metrics").text
        return [_sample(metrics, name) for name in names]

    with running_server(tiny_classifier_dir, max_wait_ms=20) as url, ThreadPoolExecutor(17) as pool:
        try:
            count0, items0 = samples(url, "snowtrain_batch_size_count", "snowtrain_batch_size_sum")
            holder = pool.submit(predict, url, {"instances": ["hold the model"]})
            assert entered.wait(60), "the model never started"
            waiting = [pool.submit(predict, url, {"instances": [f"text {i}"]}) for i in range(16)]
            deadline = time.monotonic() + 60
            while samples(url, "snowtrain_queue_depth") != [16.0]:
                assert time.monotonic() < deadline, "the requests never all queued"
                time.sleep(0.02)
        finally:
            gate.set()
        codes = [f.result().status_code for f in [holder, *waiting]]
        count1, items1 = samples(url, "snowtrain_batch_size_count", "snowtrain_batch_size_sum")
    assert codes == [200] * 17
    assert (count1 - count0, items1 - items0) == (2, 17), "the 16 waiting were not one batch"


def test_v2_infer_matches_v1_predict(base: str) -> None:
    v1 = predict(base, {"instances": TEXTS[:3]}).json()["predictions"]
    resp = httpx.post(
        f"{base}/v2/models/{NAME}/infer",
        json={
            "id": "r1",
            "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS[:3]}],
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == "r1" and body["model_name"] == NAME
    label, scores = body["outputs"]
    assert (label["name"], label["shape"], label["data"]) == (
        "label",
        [3],
        [p["label"] for p in v1],
    )
    assert scores["shape"] == [3, 3] and scores["datatype"] == "FP32"
    flat = [p["scores"][lab] for p in v1 for lab in LABELS]
    assert scores["data"] == pytest.approx(flat, abs=1e-4)
    meta = httpx.get(f"{base}/v2/models/{NAME}").json()
    assert meta["parameters"]["labels"] == LABELS


def test_metrics_expose_latency_batches_queue_and_items(base: str) -> None:
    predict(base, {"instances": ["hello"]})
    text = httpx.get(f"{base}/metrics").text
    assert (
        'snowtrain_request_duration_seconds_count{method="POST",route="/v1/models/{name}:predict",status="200"}'
        in text
    )
    assert "snowtrain_queue_depth 0.0" in text
    assert _sample(text, "snowtrain_inference_items_total") >= 1
    assert _sample(text, "snowtrain_batch_duration_seconds_count") >= 1


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"instances": []}, 400, "instances: List should have at least 1 item"),
        ({"instances": ["ok", "   "]}, 400, "instances[1] is empty"),
        ({"inputs": ["x"]}, 400, "instances: Field required"),
        ({"instances": [42]}, 400, "instances[0]"),
        ({"instances": ["x"] * 9}, 413, "instances has 9 items; this server accepts at most 8"),
        ({"instances": ["x" * 501]}, 413, "instances[0] is 501 characters; the limit is 500"),
    ],
)
def test_invalid_predict_requests_say_what_is_wrong(
    base: str, payload: object, status: int, message: str
) -> None:
    resp = predict(base, payload)
    assert resp.status_code == status
    assert message in error_message(resp)


def test_bad_json_and_oversize_bodies(base: str) -> None:
    url = f"{base}/v1/models/{NAME}:predict"
    resp = httpx.post(
        url, content=b'{"instances": ["a",', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert "not valid JSON" in error_message(resp)
    resp = httpx.post(url, content=b"", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    big = json.dumps({"instances": ["y" * 30_000]}).encode()
    resp = httpx.post(url, content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert "the server's limit is 20000 bytes" in error_message(resp)


def test_unknown_model_names_and_wrong_api(base: str) -> None:
    resp = predict(base, {"instances": ["x"]}, name="other")
    assert resp.status_code == 404
    assert "model 'other' not found; this server serves 'tiny-classifier'" in error_message(resp)
    v2 = httpx.post(
        f"{base}/v2/models/other/infer",
        json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
    )
    assert v2.status_code == 404
    assert httpx.get(f"{base}/v1/models/other").status_code == 404
    comp = httpx.post(f"{base}/v1/completions", json={"prompt": "x"})
    assert comp.status_code == 400
    assert f"use POST /v1/models/{NAME}:predict" in error_message(comp)
    assert httpx.get(f"{base}/nope").status_code == 404


def test_v2_shape_must_match_data(base: str) -> None:
    resp = httpx.post(
        f"{base}/v2/models/{NAME}/infer",
        json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["x"]}]},
    )
    assert resp.status_code == 400
    assert "shape [2] holds 2 elements but data has 1" in error_message(resp)


def test_a_model_that_fails_to_load_is_alive_false_and_never_ready(
    tiny_classifier_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_classifier_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with running_server(broken, wait=False) as url:
        deadline = time.monotonic() + 60  # only a hang guard: the load fails at once
        while (health := httpx.get(f"{url}/healthz")).status_code == 200:
            assert time.monotonic() < deadline, "the broken model never failed to load"
            time.sleep(0.05)
        assert health.status_code == 500
        assert "model failed to load" in error_message(health)
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert predict(url, {"instances": ["x"]}).status_code == 503


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_oversize_chunked_body_is_refused_too(base: str) -> None:
    def chunks():  # no Content-Length: the server must count while reading
        yield b'{"instances": ["'
        for _ in range(30):
            yield b"z" * 1000
        yield b'"]}'

    resp = httpx.post(
        f"{base}/v1/models/{NAME}:predict",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413
    assert "exceeds the server's limit of 20000 bytes" in error_message(resp)
