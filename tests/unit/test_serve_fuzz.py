"""Fuzz the model server: thousands of generated requests, and it never answers 5xx or dies.

Two in-process servers (a tiny classifier and a tiny causal LM) receive requests generated
by hypothesis: valid bodies, wrong types, negative and huge numbers, huge lists and strings,
lone surrogates and odd unicode, NaN, malformed JSON, bytes that are not UTF-8, unknown
routes and methods. Each example sends one to three requests at once, so bad requests share
batches with good ones. Every answer must be 2xx or 4xx (a stream must carry no 5xx event),
within a per-request timeout; a poller checks both servers' /healthz throughout; and
afterwards the fixed good requests are answered exactly as before the fuzzing.

A redirect is fine too: Starlette answers a path with a trailing slash (`/v1/models/`) with
307 to the path without it. `SNOWTRAIN_FUZZ_EXAMPLES` sets the number of examples (default
1,200, about 2,100 requests); run with `-s` to see the request count and status histogram.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.serving import running_server

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SNOWTRAIN_FUZZ_EXAMPLES", "1200"))
REQUEST_TIMEOUT_S = 60.0  # a hang guard, not a speed requirement
CLASSIFIER, LM = "tiny-classifier", "tiny-lm"
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
ODD = ["", " ", "\x00", "\u200b", "\ufeff", "\U0001f642" * 5, "\r\n\t", "\u0301" * 20, "[CLS]"]
ODD += ["<|endoftext|>", "\uffff", "\U0010ffff", "A\u0000B"]

GOOD_PREDICT = {"instances": ["the movie was great", {"text": "terrible service"}]}
GOOD_INFER = {
    "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["fine", "awful"]}]
}
GOOD_COMPLETION = {"prompt": ["once upon a time", "the weather"], "max_tokens": 6, "temperature": 0}


# -- strategies -------------------------------------------------------------------------------
def texts() -> st.SearchStrategy[str]:
    """Plain, odd and invalid text: any unicode, lone surrogates, long runs, specials."""
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(ODD),
        st.builds(
            lambda a, s, b: a + s + b,
            st.text(max_size=8),
            st.sampled_from(SURROGATES),
            st.text(max_size=8),
        ),
        st.integers(0, 1_200).map(lambda n: "y" * n),  # around the 1,000-character limit
    )


def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(-3, 12),
        st.integers(),
        st.integers(-(10**80), 10**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, 1e-300, 2**63, -(2**63), 2**31 - 1]),
    )


def junk() -> st.SearchStrategy[Any]:
    """Any JSON value (with NaN, huge ints and bad text), nested a little."""
    scalars = st.one_of(st.none(), st.booleans(), numbers(), texts())
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(), inner, max_size=4),
        max_leaves=12,
    )


def sometimes(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually `valid`, sometimes any JSON value at all."""
    return st.one_of(valid, valid, valid, junk())


def long_lists(item: Any) -> st.SearchStrategy[list[Any]]:
    return st.integers(0, 5_000).map(lambda n: [item] * n)


def predict_bodies() -> st.SearchStrategy[Any]:
    instance = st.one_of(texts(), st.builds(lambda t: {"text": t}, texts()), junk())
    instances = st.one_of(st.lists(instance, max_size=10), long_lists("z"), junk())
    return st.fixed_dictionaries({"instances": instances}, optional={"extra": junk()})


def infer_bodies() -> st.SearchStrategy[Any]:
    data = st.lists(texts(), min_size=0, max_size=10)

    def tensor(d: list[str], shape_kind: int, shape: list[int], name: Any, dtype: Any) -> dict:
        shapes = [[len(d)], [1, len(d)], shape, [2**31 - 1] * 15_000, [-1]]
        return {"name": name, "shape": shapes[shape_kind], "datatype": dtype, "data": d}

    one = st.builds(
        tensor,
        data,
        st.integers(0, 4),
        st.lists(numbers(), max_size=12),
        sometimes(texts()),
        st.sampled_from(["BYTES", "BYTES", "FP32", "bytes", 7]),
    )
    return st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(one, max_size=3), junk())},
        optional={
            "id": sometimes(texts()),
            "parameters": sometimes(st.dictionaries(texts(), junk(), max_size=100)),
            "outputs": sometimes(st.lists(st.dictionaries(texts(), junk()), max_size=20)),
        },
    )


def completion_bodies() -> st.SearchStrategy[Any]:
    prompts = st.one_of(texts(), st.lists(texts(), max_size=6), long_lists("p"), junk())
    stops = st.one_of(st.none(), texts(), st.lists(texts(), max_size=6), junk())
    return st.fixed_dictionaries(
        {"prompt": prompts},
        optional={
            "max_tokens": sometimes(st.integers(-2, 10)),
            "temperature": sometimes(st.floats(-1, 3) | st.sampled_from([0, 1e-300, 1e-6])),
            "top_p": sometimes(st.floats(-0.5, 1.5) | st.sampled_from([1e-300, 1.0])),
            "stop": stops,
            "stream": sometimes(st.booleans()),
            "n": sometimes(st.just(1)),
            "model": sometimes(st.sampled_from([None, LM, CLASSIFIER]) | texts()),
            "user": sometimes(texts()),
            "logit_bias": st.dictionaries(texts(), numbers(), max_size=300),
        },
    )


@dataclass(frozen=True)
class Req:
    server: str  # "clf" | "lm"
    method: str
    path: str
    content: bytes | None
    content_type: str | None
    valid: bool = False
    """A well-formed request within the limits: it must be answered 200."""

    def describe(self) -> str:
        body = (self.content or b"")[:300]
        return f"{self.method} {self.server}{self.path} {self.content_type} {body!r}"


def encode(body: Any, how: str) -> bytes:
    """JSON as clients send it: ASCII-escaped, raw UTF-8 (lone surrogates as their
    invalid bytes), or truncated mid-document."""
    if how == "ascii":
        return json.dumps(body).encode()
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return raw[: len(raw) // 2] if how == "truncated" else raw


def posts() -> st.SearchStrategy[Req]:
    routes = st.sampled_from(
        [
            ("predict", f"/v1/models/{CLASSIFIER}:predict"),
            ("infer", f"/v2/models/{CLASSIFIER}/infer"),
            ("completion", "/v1/completions"),
        ]
    )
    bodies = {
        "predict": predict_bodies(),
        "infer": infer_bodies(),
        "completion": completion_bodies(),
    }

    def build(route: tuple[str, str], server: str, how: str, ctype: str | None, data: Any) -> Req:
        kind, path = route
        return Req(server, "POST", path, encode(data[kind], how), ctype)

    return st.builds(
        build,
        routes,
        st.sampled_from(["clf", "lm"]),
        st.sampled_from(["ascii", "ascii", "utf8", "truncated"]),
        st.sampled_from(["application/json"] * 6 + [None, "text/plain"]),
        st.fixed_dictionaries(bodies),
    )


def plain() -> st.SearchStrategy[str]:
    """Valid text (any unicode but surrogates, not blank): what a good request carries."""
    return st.text(min_size=1, max_size=40).filter(str.strip)


def valid_posts() -> st.SearchStrategy[Req]:
    """Requests the server must answer 200: they share batches with the bad ones."""
    some = st.lists(plain(), min_size=1, max_size=4)
    predict = some.map(lambda t: ("clf", f"/v1/models/{CLASSIFIER}:predict", {"instances": t}))
    infer = some.map(
        lambda t: (
            "clf",
            f"/v2/models/{CLASSIFIER}/infer",
            {"inputs": [{"name": "text", "shape": [len(t)], "datatype": "BYTES", "data": t}]},
        )
    )
    completion = st.fixed_dictionaries(
        {"prompt": plain() | some, "max_tokens": st.integers(1, 8)},
        optional={
            "temperature": st.sampled_from([0, 0.7, 1.0, 1e-300]),
            "top_p": st.sampled_from([0.5, 1.0, 1e-300]),
            "stop": st.lists(plain(), max_size=4) | st.none(),
            "stream": st.booleans(),
            "model": st.just(LM),
        },
    ).map(lambda body: ("lm", "/v1/completions", body))
    return st.builds(
        lambda r, how: Req(r[0], "POST", r[1], encode(r[2], how), "application/json", True),
        predict | infer | completion,
        st.sampled_from(["ascii", "utf8"]),
    )


def raw_posts() -> st.SearchStrategy[Req]:
    paths = st.sampled_from(
        [f"/v1/models/{CLASSIFIER}:predict", f"/v2/models/{CLASSIFIER}/infer", "/v1/completions"]
    )
    content = st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"", b"null", b"[]", b"{}", b"[[[[[[[[[[", b'{"instances": "x"}']),
        st.integers(1, 100_000).map(lambda n: b"[" * n),  # deep nesting
        junk().map(lambda v: json.dumps(v).encode()),
    )
    return st.builds(
        Req, st.sampled_from(["clf", "lm"]), st.just("POST"), paths, content, st.just(None)
    )


def other_requests() -> st.SearchStrategy[Req]:
    segment = texts().map(lambda t: quote(t, safe="", errors="surrogatepass"))
    paths = st.one_of(
        st.sampled_from(
            ["/", "/v1/models", f"/v1/models/{CLASSIFIER}", f"/v2/models/{CLASSIFIER}", "/metrics"]
        ),
        segment.map(lambda s: f"/v1/models/{s}"),
        segment.map(lambda s: f"/v2/models/{s}/infer"),
        segment.map(lambda s: f"/v1/models/{s}:predict"),
        segment.map(lambda s: f"/{s}"),
    )
    return st.builds(
        Req,
        st.sampled_from(["clf", "lm"]),
        st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
        paths,
        st.sampled_from([None, b"{}"]),
        st.just("application/json"),
    )


def batches() -> st.SearchStrategy[list[Req]]:
    """One to three requests sent at once (they share a batch on the model)."""
    one = st.one_of(valid_posts(), valid_posts(), posts(), posts(), raw_posts(), other_requests())
    return st.lists(one, min_size=1, max_size=3)


# -- the servers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers(tiny_classifier_dir: Path, tiny_causal_lm_dir: Path) -> Iterator[dict[str, str]]:
    limits = {"max_instances": 8, "max_input_chars": 1_000, "max_body_bytes": 200_000}
    with (
        running_server(tiny_classifier_dir, max_wait_ms=20, **limits) as clf,
        running_server(tiny_causal_lm_dir, max_wait_ms=20, max_new_tokens=8, **limits) as lm,
    ):
        yield {"clf": clf, "lm": lm}


def good_answers(client: httpx.Client, servers: dict[str, str]) -> dict[str, Any]:
    """The answers to fixed good requests (the parts that do not change between calls)."""
    clf, lm = servers["clf"], servers["lm"]
    predict = client.post(f"{clf}/v1/models/{CLASSIFIER}:predict", json=GOOD_PREDICT)
    infer = client.post(f"{clf}/v2/models/{CLASSIFIER}/infer", json=GOOD_INFER)
    completion = client.post(f"{lm}/v1/completions", json=GOOD_COMPLETION)
    for resp in (predict, infer, completion):
        assert resp.status_code == 200, resp.text
    return {
        "predict": [p["label"] for p in predict.json()["predictions"]],
        "scores": [
            round(s, 4) for p in predict.json()["predictions"] for s in p["scores"].values()
        ],
        "infer": infer.json()["outputs"][0]["data"],
        "completion": [c["text"] for c in completion.json()["choices"]],
        "usage": completion.json()["usage"],
    }


class HealthPoller:
    """Polls both servers' /healthz in the background; counts answers that were not 200."""

    def __init__(self, servers: dict[str, str]) -> None:
        self.servers = servers
        self.checks = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-poller", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.wait(0.25):
                for name, url in self.servers.items():
                    try:
                        status = client.get(f"{url}/healthz").status_code
                    except httpx.HTTPError as exc:
                        status = repr(exc)
                    self.checks += 1
                    if status != 200:
                        self.failures.append(f"{name}: {status}")

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def server_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("serve-")}


def test_no_request_gets_a_5xx_or_takes_the_server_down(servers: dict[str, str]) -> None:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    bad: list[str] = []
    threads_before = server_threads()
    client = httpx.Client(timeout=REQUEST_TIMEOUT_S)
    pool = ThreadPoolExecutor(3)

    def send(req: Req) -> None:
        headers = {"content-type": req.content_type} if req.content_type else {}
        resp = client.request(
            req.method, servers[req.server] + req.path, content=req.content, headers=headers
        )
        with lock:
            statuses[resp.status_code] += 1
        stream_failed = resp.headers.get("content-type", "").startswith("text/event-stream") and (
            '"code": 500' in resp.text or "[DONE]" not in resp.text
        )
        redirect = resp.status_code == 307 and resp.headers.get("location", "").startswith("http")
        if (
            resp.status_code >= 500
            or ((resp.status_code < 200 or 300 <= resp.status_code < 400) and not redirect)
            or stream_failed
            or (req.valid and resp.status_code != 200)
        ):
            bad.append(f"{resp.status_code} {resp.text[:200]!r} <- {req.describe()}")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=batches())
    def fuzz(batch: list[Req]) -> None:
        for future in [pool.submit(send, req) for req in batch]:
            future.result()  # re-raises a timeout: a hang fails the test

    try:
        before = good_answers(client, servers)
        with HealthPoller(servers) as health:
            fuzz()
        after = good_answers(client, servers)
    finally:
        pool.shutdown()
        client.close()

    total = sum(statuses.values())
    histogram = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    restarts = len(threads_before - server_threads())
    print(
        f"\nfuzz: {total} requests in {EXAMPLES} examples; status codes {{{histogram}}}; "
        f"healthz checks {health.checks}, failed {len(health.failures)}; restarts {restarts}"
    )
    assert not bad, f"{len(bad)} answers were not 2xx/4xx:\n" + "\n".join(bad[:20])
    assert not health.failures, health.failures[:10]
    assert restarts == 0 and threads_before, "a server thread died"
    assert after == before, "good requests are answered differently after the fuzzing"
    assert total >= EXAMPLES
