"""The server on a tiny exported causal LM: OpenAI completions, SSE streaming, back-pressure.

Every test runs against both schedulers (continuous batching, the default, and lockstep
`generate`): they must answer alike.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.serving import running_server

NAME = "tiny-lm"


BATCHING = ("continuous", "lockstep")


@pytest.fixture(scope="module", params=BATCHING)
def batching(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def base(tiny_causal_lm_dir: Path, batching: str) -> Iterator[str]:
    with running_server(
        tiny_causal_lm_dir, max_wait_ms=10, max_new_tokens=300, batching=batching
    ) as url:
        yield url


def hold_generation(
    monkeypatch: pytest.MonkeyPatch, batching: str, until: Callable[[Any], bool]
) -> None:
    """Block the generation thread at its next step while `until(row)` says so for a row of
    this test's, so a test controls timing exactly instead of racing a fast model.

    Lockstep generation advances rows in its worker thread; continuous batching advances
    them on the event loop (which must not block) and its engine thread runs the sampling
    processors each step, so that is where it is held.
    """
    from snowtrain.serve.continuous import TemperatureScale
    from snowtrain.serve.generation import RowText

    rows: list[RowText] = []
    init = RowText.__init__

    def tracking_init(self: RowText, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        rows.append(self)

    monkeypatch.setattr(RowText, "__init__", tracking_init)

    def wait_while_held() -> None:
        deadline = time.monotonic() + 120
        while any(until(r) for r in list(rows)) and time.monotonic() < deadline:
            time.sleep(0.01)  # a condition poll (the test releases it), not a timing guess

    if batching == "lockstep":
        advance = RowText.advance

        def held_advance(self: RowText, token: int) -> None:
            wait_while_held()
            advance(self, token)

        monkeypatch.setattr(RowText, "advance", held_advance)
    else:
        scale = TemperatureScale.__call__

        def held_scale(self: TemperatureScale, scores: Any, arg: Any) -> Any:
            wait_while_held()
            return scale(self, scores, arg)

        monkeypatch.setattr(TemperatureScale, "__call__", held_scale)


def complete(base: str, **body: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/completions", json=body, timeout=60)


def stream_events(base: str, **body: object) -> tuple[httpx.Response, list[object]]:
    """POST with stream=true; return the response and the parsed `data:` payloads."""
    events: list[object] = []
    with httpx.stream(
        "POST", f"{base}/v1/completions", json={**body, "stream": True}, timeout=60
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return resp, events


def error_message(resp: httpx.Response) -> str:
    assert resp.json()["error"]["code"] == resp.status_code
    return resp.json()["error"]["message"]


def test_model_list_and_readiness(base: str) -> None:
    (card,) = httpx.get(f"{base}/v1/models").json()["data"]
    assert (card["id"], card["task"], card["object"]) == (NAME, "completion", "model")
    assert httpx.get(f"{base}/readyz").status_code == 200


def test_completion_follows_the_openai_shape(base: str) -> None:
    resp = complete(base, model=NAME, prompt="once upon a time", max_tokens=7, temperature=0)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "text_completion" and body["model"] == NAME
    assert body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["text"]
    usage = body["usage"]
    assert usage["completion_tokens"] <= 7
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_greedy_is_deterministic_and_batch_independent(base: str) -> None:
    """A prompt completes the same alone, in a list, and batched with other requests."""
    prompts = ["once upon a time", "the movie", "numbers 0 1 2"]
    alone = [complete(base, prompt=p, max_tokens=12, temperature=0).json() for p in prompts]
    listed = complete(base, prompt=prompts, max_tokens=12, temperature=0).json()
    assert [c["index"] for c in listed["choices"]] == [0, 1, 2]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{base}/v1/completions",
                        json={"prompt": p, "max_tokens": 12, "temperature": 0},
                    )
                    for p in prompts * 2
                )
            )

    concurrent = asyncio.run(burst())
    for i, a in enumerate(alone):
        assert listed["choices"][i]["text"] == a["choices"][0]["text"]
        assert concurrent[i].json()["choices"][0]["text"] == a["choices"][0]["text"]


def test_sampling_settings_are_honoured(base: str) -> None:
    texts = {
        complete(base, prompt="once", max_tokens=20, temperature=1.5, top_p=1.0).json()["choices"][
            0
        ]["text"]
        for _ in range(3)
    }
    assert len(texts) > 1, "temperature 1.5 sampled the same 20 tokens three times"


def test_stop_string_cuts_the_text(base: str) -> None:
    full = complete(base, prompt="once upon a time", max_tokens=12, temperature=0).json()
    text = full["choices"][0]["text"]
    stop = text[len(text) // 2 :][:3]
    assert stop.strip(), f"need a visible stop string from {text!r}"
    cut = complete(
        base, prompt="once upon a time", max_tokens=12, temperature=0, stop=[stop]
    ).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == text[: text.find(stop)]


def test_streaming_sends_deltas_that_add_up_to_the_full_completion(base: str) -> None:
    full = complete(base, prompt="the weather", max_tokens=15, temperature=0).json()
    resp, events = stream_events(base, prompt="the weather", max_tokens=15, temperature=0)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 3, "the text arrived in one piece, not streamed"
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_streaming_several_prompts_and_a_stop_string(base: str) -> None:
    prompts = ["once upon a time", "the movie"]
    full = complete(base, prompt=prompts, max_tokens=10, temperature=0).json()["choices"]
    stop = full[0]["text"][4:7]
    _, events = stream_events(base, prompt=prompts, max_tokens=10, temperature=0, stop=stop)
    texts = ["", ""]
    finish = [None, None]
    for ev in events[:-1]:
        (choice,) = ev["choices"]
        texts[choice["index"]] += choice["text"]
        finish[choice["index"]] = choice["finish_reason"] or finish[choice["index"]]
    assert texts[0] == full[0]["text"][: full[0]["text"].find(stop)]
    assert finish[0] == "stop"
    expected1 = full[1]["text"]
    if stop in expected1:
        expected1 = expected1[: expected1.find(stop)]
    assert texts[1] == expected1


def test_generated_tokens_are_counted_in_metrics(base: str) -> None:
    def generated() -> float:
        for line in httpx.get(f"{base}/metrics").text.splitlines():
            if line.startswith("snowtrain_generated_tokens_total "):
                return float(line.split()[1])
        raise AssertionError("no snowtrain_generated_tokens_total")

    before = generated()
    usage = complete(base, prompt="hello", max_tokens=5, temperature=0).json()["usage"]
    assert generated() - before == usage["completion_tokens"]
    tps = [
        float(line.split()[1])
        for line in httpx.get(f"{base}/metrics").text.splitlines()
        if line.startswith("snowtrain_generation_tokens_per_second ")
    ]
    assert tps and tps[0] > 0


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": ""}, 400, "prompt[0] is empty"),
        ({}, 400, "prompt: Field required"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens: Input should be greater than"),
        ({"prompt": "x", "max_tokens": 301}, 400, "max_tokens 301 exceeds this server's limit"),
        ({"prompt": "x", "temperature": 5}, 400, "temperature: Input should be less than"),
        ({"prompt": "x", "n": 2}, 400, "n: Input should be 1"),
        ({"prompt": "word " * 400, "max_tokens": 200}, 400, "the model's context holds 512"),
        ({"prompt": "x" * 20_001}, 413, "the limit is 20000"),
        ({"prompt": "x", "model": "gpt-4"}, 404, "model 'gpt-4' not found"),
    ],
)
def test_invalid_completion_requests_say_what_is_wrong(
    base: str, body: dict, status: int, message: str
) -> None:
    resp = complete(base, **body)
    assert resp.status_code == status, resp.text
    assert message in error_message(resp)


def test_stream_errors_are_http_errors_not_broken_streams(base: str) -> None:
    resp = httpx.post(f"{base}/v1/completions", json={"prompt": "", "stream": True})
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/json")


def test_classification_routes_refuse_a_language_model(base: str) -> None:
    resp = httpx.post(f"{base}/v1/models/{NAME}:predict", json={"instances": ["x"]})
    assert resp.status_code == 400
    assert "use POST /v1/completions" in error_message(resp)


@pytest.mark.parametrize("mode", BATCHING)
def test_burst_beyond_the_queue_gets_429_not_unbounded_waiting(
    tiny_causal_lm_dir: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """While the model is busy, the server takes a bounded number of prompts more: the rest of
    a burst get 429 with Retry-After at once instead of waiting, and everything accepted
    completes once the model frees up.

    Lockstep: one request occupies the model and the queue holds `max_queue` more.
    Continuous: up to `max_batch_size + max_queue` prompts are in the system at once (the
    holder is one of them). The model is held busy by a gate rather than by being slow, so
    the counts are exact on any machine (with no bound, none would come back).
    """
    gate = threading.Event()
    held: list[Any] = []

    def holding(row: Any) -> bool:
        if row.item.prompt == "hold the model" and not gate.is_set():
            held.append(row)
            return True
        return False

    hold_generation(monkeypatch, mode, holding)
    max_batch, max_queue, burst_size = 2, 4, 20
    accepted = max_queue if mode == "lockstep" else max_batch + max_queue - 1

    def body(prompt: str) -> dict:
        return {"prompt": prompt, "max_tokens": 8, "temperature": 0}

    async def scenario(url: str) -> tuple[httpx.Response, list[httpx.Response], str]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            post = f"{url}/v1/completions"
            holder = asyncio.create_task(client.post(post, json=body("hold the model")))
            deadline = time.monotonic() + 60
            while not held:
                assert time.monotonic() < deadline, "the model never started"
                await asyncio.sleep(0.01)
            burst = [
                asyncio.create_task(client.post(post, json=body(f"req {i}")))
                for i in range(burst_size)
            ]
            try:
                # Everything beyond the bound is answered while the model is still busy.
                pending = set(burst)
                while len(pending) > accepted:
                    done, pending = await asyncio.wait(
                        pending, timeout=60, return_when=asyncio.FIRST_COMPLETED
                    )
                    assert done, f"{len(pending)} requests wait, beyond the queue bound"
                busy_metrics = (await client.get(f"{url}/metrics")).text
                assert not holder.done()
            finally:
                gate.set()
            return await holder, list(await asyncio.gather(*burst)), busy_metrics

    with running_server(
        tiny_causal_lm_dir,
        max_batch_size=max_batch,
        max_queue=max_queue,
        max_wait_ms=0,
        batching=mode,
    ) as url:
        try:
            holder, responses, busy_metrics = asyncio.run(scenario(url))
        finally:
            gate.set()
        metrics = httpx.get(f"{url}/metrics").text

    assert holder.status_code == 200, holder.text
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [200] * accepted + [429] * (burst_size - accepted), codes
    assert f"snowtrain_queue_depth {max_queue}.0" in busy_metrics
    for r in responses:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"
            assert "queue full" in error_message(r)
        else:
            assert r.json()["usage"]["completion_tokens"] >= 1
    rejected = burst_size - accepted
    assert f'snowtrain_rejected_requests_total{{reason="queue_full"}} {rejected}.0' in metrics
    assert "snowtrain_queue_depth 0.0" in metrics


def test_a_client_leaving_mid_stream_stops_its_generation(
    base: str, batching: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads a few events and hangs up; its row stops long before max_tokens.

    Generation is held once the row has 50 tokens until the server has marked it cancelled,
    so a fast model cannot finish all 300 tokens before the disconnect is noticed (a race
    the test would otherwise lose on a busy machine); a server that never cancels runs on to
    300. Continuous batching may have the next step's token in flight: at most one more.
    """
    prompt, hold_at = "once upon a time a client left", 50
    hold_generation(
        monkeypatch,
        batching,
        lambda row: (
            row.item.prompt == prompt
            and len(row.ids) >= hold_at
            and not row.item.cancelled.is_set()
        ),
    )

    def generated() -> float:
        for line in httpx.get(f"{base}/metrics").text.splitlines():
            if line.startswith("snowtrain_generated_tokens_total "):
                return float(line.split()[1])
        raise AssertionError("no snowtrain_generated_tokens_total")

    before = generated()
    body = {"prompt": prompt, "max_tokens": 300, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as resp:
        lines = resp.iter_lines()
        received = [line for _, line in zip(range(6), lines, strict=False)]
    assert any(line.startswith("data: ") for line in received)
    deadline = time.monotonic() + 120
    while generated() == before:
        assert time.monotonic() < deadline, "the abandoned generation never finished"
        time.sleep(0.05)  # polls until the metric moves; the deadline is the only bound
    assert 1 <= generated() - before <= hold_at + 1


def test_end_of_text_ends_a_completion_as_stop(tiny_causal_lm_dir: Path, tmp_path: Path) -> None:
    """A model that always predicts EOS (id 0 here) stops at once with finish_reason stop."""
    import torch
    from safetensors.torch import load_file, save_file

    eos_dir = tmp_path / "eos-lm"
    eos_dir.mkdir()
    for f in tiny_causal_lm_dir.iterdir():
        (eos_dir / f.name).write_bytes(f.read_bytes())
    weights = load_file(eos_dir / "model.safetensors")
    # GPT-2's LM head is tied to wte and has no bias: make EOS win through the final norm.
    weights["transformer.ln_f.weight"] = torch.zeros_like(weights["transformer.ln_f.weight"])
    weights["transformer.ln_f.bias"] = torch.zeros_like(weights["transformer.ln_f.bias"])
    weights["transformer.ln_f.bias"][0] = 1.0
    weights["transformer.wte.weight"] = torch.zeros_like(weights["transformer.wte.weight"])
    weights["transformer.wte.weight"][0, 0] = 100.0
    save_file(weights, eos_dir / "model.safetensors", metadata={"format": "pt"})
    with running_server(eos_dir) as url:
        body = complete(url, prompt="hello", max_tokens=20, temperature=0).json()
    (choice,) = body["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("", "stop")
    assert body["usage"]["completion_tokens"] == 0
