"""No request can take the model server down, or fail someone else's request.

One test per defect of the issue "a model server no request can take down":

- text that is not valid UTF-8 (a lone surrogate) is refused with 400 naming the field and
  index, and never fails the requests batched with it: the schemas refuse it at the edge, and
  if some bad item still reaches the model, the batcher and the model rerun the batch one
  item at a time so only the bad item fails;
- a v2 `shape` (and every other list or string a request carries) is bounded before any
  work: an absurd shape is refused with 4xx without the server multiplying its dimensions;
- stop strings have a count and a length limit, and the limits are in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from snowtrain.serve import schemas
from snowtrain.serve.batcher import DynamicBatcher
from snowtrain.serve.generation import CompletionItem
from snowtrain.serve.model_dir import inspect_model_dir
from snowtrain.serve.models import ClassifierModel, CompletionModel, InvalidInput
from snowtrain.serve.runtime import choose_runtime
from snowtrain.serve.schemas import RequestLimits, request_models
from tests.fixtures.serving import running_server

CLASSIFIER = "tiny-classifier"
LM = "tiny-lm"
LONE = "ok \ud800 then more"  # a lone high surrogate at index 3
GOOD = ["the movie was great", "terrible service", "an ordinary afternoon"]


def post(url: str, body: Any) -> httpx.Response:
    """POST `body` as JSON; json.dumps escapes a lone surrogate as \\ud800, as a client would."""
    return httpx.post(
        url,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        timeout=60,
    )


def error_message(resp: httpx.Response) -> str:
    body = resp.json()
    assert body["error"]["code"] == resp.status_code
    return body["error"]["message"]


@pytest.fixture(scope="module")
def classifier(tiny_classifier_dir: Path) -> Iterator[str]:
    # A long batching window: concurrent requests share batches, as under real load.
    with running_server(tiny_classifier_dir, max_wait_ms=100, max_instances=8) as url:
        yield url


@pytest.fixture(scope="module")
def lm(tiny_causal_lm_dir: Path) -> Iterator[str]:
    with running_server(
        tiny_causal_lm_dir, max_wait_ms=50, max_new_tokens=20, max_stop_strings=3
    ) as url:
        yield url


# -- invalid text -----------------------------------------------------------------------------
def test_a_lone_surrogate_answers_400_and_the_requests_beside_it_succeed(classifier: str) -> None:
    url = f"{classifier}/v1/models/{CLASSIFIER}:predict"
    alone = [post(url, {"instances": [t]}).json()["predictions"][0] for t in GOOD]
    bodies = [{"instances": [t]} for t in GOOD] + [{"instances": ["fine", LONE]}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: post(url, b), bodies * 3))
    for resp, body in zip(answers, bodies * 3, strict=True):
        if LONE in body["instances"]:
            assert resp.status_code == 400
            message = error_message(resp)
            assert "instances[1]" in message and "character 3" in message
            assert "surrogate" in message
        else:
            assert resp.status_code == 200, resp.text
            (pred,) = resp.json()["predictions"]
            expected = alone[GOOD.index(body["instances"][0])]
            assert pred["label"] == expected["label"]
            for label, score in expected["scores"].items():
                assert pred["scores"][label] == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("v1/models/{name}:predict", {"instances": [{"text": LONE}]}, "instances[0].text"),
        (
            "v2/models/{name}/infer",
            {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a", LONE]}]},
            "inputs[0].data[1]",
        ),
        (
            "v2/models/{name}/infer",
            {
                "id": "\udfff",
                "inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
            },
            "id",
        ),
    ],
)
def test_invalid_text_in_any_classifier_field_is_named(
    classifier: str, path: str, body: dict, field: str
) -> None:
    resp = post(f"{classifier}/{path.format(name=CLASSIFIER)}", body)
    assert resp.status_code == 400
    assert error_message(resp).startswith(f"{field}: text is not valid Unicode")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ["fine", LONE]}, "prompt[1]"),
        ({"prompt": LONE}, "prompt"),
        ({"prompt": "fine", "stop": ["x", "\ud800"]}, "stop[1]"),
        ({"prompt": "fine", "model": "\ud800"}, "model"),
    ],
)
def test_invalid_text_in_a_completion_is_named_and_other_requests_succeed(
    lm: str, body: dict, field: str
) -> None:
    url = f"{lm}/v1/completions"
    good = {"prompt": "once upon a time", "max_tokens": 5, "temperature": 0}
    with ThreadPoolExecutor(4) as pool:
        bad_resp, *good_resps = list(pool.map(lambda b: post(url, b), [body, good, good, good]))
    assert bad_resp.status_code == 400
    assert error_message(bad_resp).startswith(f"{field}: text is not valid Unicode")
    texts = {r.json()["choices"][0]["text"] for r in good_resps if r.status_code == 200}
    assert [r.status_code for r in good_resps] == [200, 200, 200]
    assert len(texts) == 1  # greedy: the same answer every time


@pytest.fixture(scope="module")
def classifier_model(tiny_classifier_dir: Path) -> ClassifierModel:
    model = ClassifierModel(inspect_model_dir(tiny_classifier_dir), choose_runtime("cpu", 1))
    model.load()
    return model


@pytest.fixture(scope="module")
def completion_model(tiny_causal_lm_dir: Path) -> CompletionModel:
    model = CompletionModel(inspect_model_dir(tiny_causal_lm_dir), choose_runtime("cpu", 1))
    model.load()
    return model


def _batch(run_batch: Any, items: list[Any]) -> list[Any]:
    """Submit `items` as one batch (one submit: they are queued together) and collect."""

    async def main() -> list[Any]:
        batcher = DynamicBatcher(run_batch, max_batch_size=len(items), max_wait_ms=0)
        await batcher.start()
        futures = batcher.submit_nowait(items)
        out = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return list(out)

    return asyncio.run(main())


def test_a_bad_item_that_reaches_the_classifier_fails_alone(
    classifier_model: ClassifierModel,
) -> None:
    """The second line of defence: no schema in front, the batch holds a lone surrogate."""
    alone = classifier_model.predict(GOOD)
    out = _batch(classifier_model.predict, [GOOD[0], LONE, GOOD[1], GOOD[2]])
    assert isinstance(out[1], InvalidInput)
    for got, want in zip([out[0], out[2], out[3]], alone, strict=True):
        assert got.label == want.label
        for label, score in want.scores.items():
            assert got.scores[label] == pytest.approx(score, abs=1e-4)


def test_a_bad_prompt_that_reaches_the_language_model_fails_alone(
    completion_model: CompletionModel,
) -> None:
    def item(prompt: str) -> CompletionItem:
        return CompletionItem(prompt, max_tokens=4, temperature=0)

    alone = completion_model.predict([item("once upon a time")])[0]
    out = _batch(completion_model.predict, [item("once upon a time"), item(LONE)])
    assert isinstance(out[1], InvalidInput)
    assert out[0] == alone


# -- bounded before any work ------------------------------------------------------------------
def test_a_huge_v2_shape_is_refused_before_its_dimensions_are_multiplied(
    classifier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    multiplied: list[int] = []
    real = schemas._shape_elements
    monkeypatch.setattr(
        schemas, "_shape_elements", lambda shape: multiplied.append(len(shape)) or real(shape)
    )
    infer = request_models(RequestLimits()).infer
    huge = [2**31 - 1] * 200_000
    with pytest.raises(ValidationError) as err:
        infer.model_validate(
            {"inputs": [{"name": "t", "shape": huge, "datatype": "BYTES", "data": ["x"]}]}
        )
    assert [e["type"] for e in err.value.errors()] == ["too_long"]
    assert multiplied == []  # refused on the length alone

    resp = post(
        f"{classifier}/v2/models/{CLASSIFIER}/infer",
        {"inputs": [{"name": "t", "shape": huge, "datatype": "BYTES", "data": ["x"]}]},
    )
    assert resp.status_code == 413
    assert "inputs[0].shape has 200000 items; this server accepts at most 8" in error_message(resp)
    assert httpx.get(f"{classifier}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("shape", "status", "message"),
    [
        ([1, -1], 400, "inputs[0].shape[1]: Input should be greater than or equal to 0"),
        ([2**40], 400, "inputs[0].shape[0]: Input should be less than or equal to"),
        ([1, 1, 1, 1, 1, 1, 1, 2], 400, "holds 2 elements but data has 1"),
        ([1, 1, 1, 1, 1, 1, 1, 1], 200, ""),
    ],
)
def test_v2_shapes_are_checked_dimension_by_dimension(
    classifier: str, shape: list[int], status: int, message: str
) -> None:
    resp = post(
        f"{classifier}/v2/models/{CLASSIFIER}/infer",
        {"inputs": [{"name": "t", "shape": shape, "datatype": "BYTES", "data": ["x"]}]},
    )
    assert resp.status_code == status, resp.text
    if message:
        assert message in error_message(resp)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"stop": ["a", "b", "c", "d"]}, 413, "stop has 4 items; this server accepts at most 3"),
        ({"stop": "s" * 129}, 413, "stop is 129 characters; the limit is 128"),
        ({"stop": ["a", "s" * 200]}, 413, "stop[1] is 200 characters; the limit is 128"),
        ({"max_tokens": 10**30}, 400, "max_tokens 1000000000000000000000000000000 exceeds"),
        ({"user": "u" * 257}, 413, "user is 257 characters; the limit is 256"),
        ({"prompt": {"text": "x"}}, 400, "prompt: Input should be a string or a list of strings"),
        ({"temperature": float("nan")}, 400, "temperature"),
        ({"top_p": -1}, 400, "top_p"),
    ],
)
def test_completion_lists_and_strings_are_bounded(
    lm: str, body: dict, status: int, message: str
) -> None:
    resp = post(f"{lm}/v1/completions", {"prompt": "once upon a time", **body})
    assert resp.status_code == status, resp.text
    assert message in error_message(resp)


def test_a_tiny_temperature_decodes_instead_of_failing(lm: str) -> None:
    """Logits divided by 1e-300 are infinite and sampling from them fails: it is greedy."""
    body = {"prompt": "once upon a time", "max_tokens": 5}
    greedy = post(f"{lm}/v1/completions", {**body, "temperature": 0})
    tiny = post(f"{lm}/v1/completions", {**body, "temperature": 1e-300})
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_the_openapi_schema_states_the_servers_limits(lm: str) -> None:
    spec = httpx.get(f"{lm}/openapi.json").json()["components"]["schemas"]
    completion = spec["CompletionRequest"]["properties"]
    assert completion["max_tokens"]["maximum"] == 20
    stop_list = next(s for s in completion["stop"]["anyOf"][0]["oneOf"] if s.get("type") == "array")
    assert stop_list["maxItems"] == 3 and stop_list["items"]["maxLength"] == 128
    infer = spec["InferInput"]["properties"]
    assert infer["shape"]["maxItems"] == schemas.MAX_SHAPE_DIMS
    assert infer["data"]["maxItems"] == 64


def test_the_limits_are_server_settings(tmp_path: Path) -> None:
    from snowtrain.serve.__main__ import parse_args
    from snowtrain.serve.settings import ServeSettings

    args = ["--model-dir", str(tmp_path), "--max-stop-strings", "2", "--max-stop-chars", "16"]
    settings = parse_args(args)
    limits = RequestLimits.from_settings(settings)
    assert (limits.max_stop_strings, limits.max_stop_chars) == (2, 16)
    completion = request_models(limits).completion
    with pytest.raises(ValidationError):
        completion.model_validate({"prompt": "x", "stop": ["a", "b", "c"]})
    assert completion.model_validate({"prompt": "x", "stop": ["a", "b"]}).stops() == ("a", "b")
    with pytest.raises(ValueError, match="max_stop_chars must be >= 1"):
        ServeSettings(model_dir=tmp_path, max_stop_chars=0)
