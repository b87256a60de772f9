"""The operator's /metrics: what a dashboard shows about reconciles, the work queue, jobs by
phase, Kubernetes API errors, leadership and webhook decisions.

The registry is shared by the whole test session, so counters are read as the change a test
caused, and each test's work queue has a name of its own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from snowtrain.api.kinds import GROUP, VERSION
from snowtrain.operator import children as ch
from snowtrain.operator import metrics
from snowtrain.operator.context import Context
from snowtrain.operator.kube import Kube, send
from snowtrain.operator.reconcile import reconcile
from snowtrain.operator.settings import OperatorSettings
from snowtrain.operator.workqueue import WorkQueue

P = "snowtrain_operator_"


def value(name: str, text: bytes | None = None, **labels: str) -> float | None:
    """One sample as a scrape shows it (None: not exported)."""
    for family in text_string_to_metric_families((text or metrics.render()).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def count(name: str, **labels: str) -> float:
    """The sum of the samples with these labels (whatever their other labels)."""
    total = 0.0
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


Answer = tuple[int, Any] | Callable[[dict[str, Any]], tuple[int, Any]]


class FakeApiServer:
    """A stand-in Kubernetes API server: each (method, path) answers from a script, the
    last answer repeating; anything unscripted is a 404 Status, as the real one sends."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Answer]] = {}
        self.seen: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                path = self.path.split("?")[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                fake.seen.append((self.command, path))
                answers = fake.script.get((self.command, path))
                answer: Answer = (404, {}) if not answers else answers[0]
                if answers and len(answers) > 1:
                    answers.pop(0)
                code, payload = answer(body) if callable(answer) else answer
                if code >= 400:
                    payload = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "code": code, "message": f"{path}: {code}"}  # fmt: skip
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, *answers: Answer) -> None:
        self.script[(method, path)] = list(answers)

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.url))


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_reconciles_on_the_work_queue_are_timed_by_kind_and_outcome(api: FakeApiServer) -> None:
    jobs = f"/apis/{GROUP}/{VERSION}/namespaces/ml"
    bad = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": "bad", "namespace": "ml", "uid": "u-1", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"task": "no-such-task"},
    }  # fmt: skip
    # The invalid job is decided Failed (a status write, an Event); "deleted" is gone; the
    # API server fails "flaky" once (the queue retries it) and then says it is gone too.
    api.answer("PATCH", f"{jobs}/finetunejobs/bad/status",
               lambda patch: (200, {**bad, "status": patch["status"]}))  # fmt: skip
    api.answer("POST", "/api/v1/namespaces/ml/events", (201, {}))
    api.answer("GET", f"{jobs}/finetunejobs/deleted", (404, None))
    api.answer("GET", f"{jobs}/pretrainjobs/flaky", (500, None), (404, None))
    ctx = Context(
        kube=Kube(api.api_client()), settings=OperatorSettings(), caps=ch.Capabilities(1, 30)
    )
    ctx.remember(bad)
    before = {
        (kind, outcome): count(P + "reconcile_duration_seconds_count", kind=kind, outcome=outcome)
        for kind in ("FineTuneJob", "PretrainJob")
        for outcome in ("ok", "gone", "error")
    }
    errors_500 = count(P + "api_errors_total", verb="get", code="500")
    patches = count(P + "api_requests_total", verb="patch")

    q: WorkQueue[tuple[str, str, str]] = WorkQueue(
        lambda key, flag: reconcile(ctx, key, force_logs=flag),
        workers=2, name="test-reconcile", base_delay=0.01,
    )  # fmt: skip
    for name in ("bad", "deleted"):
        q.add(("FineTuneJob", "ml", name), priority=0, flag=True)
    q.add(("PretrainJob", "ml", "flaky"), priority=0, flag=True)
    q.start()

    def runs(kind: str, outcome: str) -> float:
        key = (kind, outcome)
        return count(P + "reconcile_duration_seconds_count", kind=kind, outcome=outcome) - before[key]  # fmt: skip

    wait_for(lambda: runs("PretrainJob", "gone") == 1)
    q.stop()
    ctx.events.shutdown(wait=True)

    assert ctx.known()[0][1]["status"]["phase"] == "Failed"  # the reconcile really ran
    assert runs("FineTuneJob", "ok") == 1
    assert runs("FineTuneJob", "gone") == 1
    assert runs("PretrainJob", "error") == 1  # the 500, then retried after a backoff
    assert runs("FineTuneJob", "error") == runs("PretrainJob", "ok") == 0
    # Every run lands in a bucket below the 30 s top; the sum is real time spent.
    ok_in_30s = count(P + "reconcile_duration_seconds_bucket", kind="FineTuneJob", outcome="ok", le="30.0")  # fmt: skip
    assert ok_in_30s >= 1
    assert count(P + "reconcile_duration_seconds_sum", kind="FineTuneJob", outcome="ok") > 0
    # Four runs were taken off the queue (three keys, one retry), each with its wait.
    assert count(P + "workqueue_wait_seconds_count", queue="test-reconcile") == 4
    assert count(P + "workqueue_retries_total", queue="test-reconcile") == 1
    # The failed GET is an API error a dashboard can tell from a slow API server.
    assert count(P + "api_errors_total", verb="get", code="500") - errors_500 == 1
    assert count(P + "api_requests_total", verb="patch") - patches == 1


def test_queue_depth_and_wait_are_read_at_scrape_time() -> None:
    gate = threading.Event()
    started = threading.Event()

    def handler(key: str, flag: bool) -> None:
        started.set()
        gate.wait(5)

    q: WorkQueue[str] = WorkQueue(handler, workers=1, name="test-depth")
    for key in ("a", "b", "c"):
        q.add(key, priority=1)
    q.add("a", priority=0)  # coalesced: still three keys
    q.add_after("later", 60, priority=3)

    def depth() -> tuple[float | None, ...]:
        text = metrics.render()
        return tuple(value(P + f"workqueue_{m}", text, queue="test-depth")
                     for m in ("depth", "delayed", "running"))  # fmt: skip

    assert depth() == (3, 1, 0)
    # The keys wait at least this long before a worker exists: their wait samples must land
    # above the 0.05 s bucket. Load only makes the wait longer, never shorter.
    time.sleep(0.06)
    q.start()
    assert started.wait(5)
    assert depth() == (2, 1, 1)
    gate.set()
    wait_for(lambda: depth() == (0, 1, 0))
    q.stop()
    assert depth() == (None, None, None)  # a stopped queue is no longer reported
    # Every key waited at least the time before the workers started.
    assert count(P + "workqueue_wait_seconds_count", queue="test-depth") == 3
    assert count(P + "workqueue_wait_seconds_bucket", queue="test-depth", le="0.05") == 0
    assert count(P + "workqueue_wait_seconds_sum", queue="test-depth") >= 3 * 0.06


def _job(kind: str, name: str, phase: str | None) -> tuple[tuple[str, str, str], dict]:
    body: dict[str, Any] = {"kind": kind, "metadata": {"namespace": "ml", "name": name}}
    if phase:
        body["status"] = {"phase": phase}
    return (kind, "ml", name), body


def test_jobs_by_kind_and_phase_come_from_the_jobs_source() -> None:
    known = [
        _job("FineTuneJob", "a", "Running"),
        _job("FineTuneJob", "b", "Running"),
        _job("FineTuneJob", "c", None),  # no status written yet
        _job("PretrainJob", "p", "Succeeded"),
    ]
    metrics.register_jobs_source(lambda: known)
    try:
        text = metrics.render()
        assert value(P + "jobs", text, kind="FineTuneJob", phase="Running") == 2
        assert value(P + "jobs", text, kind="FineTuneJob", phase="Pending") == 1
        assert value(P + "jobs", text, kind="PretrainJob", phase="Succeeded") == 1
        # Phases without jobs read 0 rather than vanishing from the graph.
        assert value(P + "jobs", text, kind="FineTuneJob", phase="Failed") == 0
        assert value(P + "jobs", text, kind="PretrainJob", phase="Running") == 0

        known[0] = _job("FineTuneJob", "a", "Succeeded")  # the next scrape sees the change
        text = metrics.render()
        assert value(P + "jobs", text, kind="FineTuneJob", phase="Running") == 1
        assert value(P + "jobs", text, kind="FineTuneJob", phase="Succeeded") == 1

        def starting() -> list:
            raise AssertionError("the startup handler has not run")

        metrics.register_jobs_source(starting)  # a scrape during startup still answers
        assert value(P + "jobs", kind="FineTuneJob", phase="Running") is None
        assert value(P + "leader") is not None
    finally:
        metrics.register_jobs_source(None)
    assert value(P + "jobs", kind="FineTuneJob", phase="Pending") is None


def test_api_errors_are_counted_by_verb_and_code_through_the_real_client(
    api: FakeApiServer,
) -> None:
    api.answer("GET", "/api/v1/namespaces/ml/pods", (403, None))
    api.answer("GET", "/api/v1/namespaces/ml/pods/p", (404, None))
    api.answer("POST", "/api/v1/namespaces/ml/configmaps", (409, None))
    api.answer("GET", "/apis/batch/v1/namespaces/ml/jobs", (200, {"items": []}))
    api_client = metrics.instrument(metrics.instrument(api.api_client()))  # idempotent
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    errors = {
        (verb, code): count(P + "api_errors_total", verb=verb, code=code)
        for verb, code in (("list", "403"), ("get", "404"), ("create", "409"), ("get", "<error>"))
    }
    requests = {v: count(P + "api_requests_total", verb=v) for v in ("get", "list", "create")}

    with pytest.raises(ApiException) as forbidden:
        core.list_namespaced_pod("ml")
    assert forbidden.value.status == 403  # the caller still sees the error
    with pytest.raises(ApiException):
        core.read_namespaced_pod("p", "ml")
    with pytest.raises(ApiException) as exists:  # the unparsed path reconcile's creates use
        send(core.create_namespaced_config_map, "ml", {"metadata": {"name": "c"}})
    assert exists.value.status == 409
    assert batch.list_namespaced_job("ml").items == []

    with socket.socket() as s:  # a port nobody listens on: the API server is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    configuration = client.Configuration(host=down)
    configuration.retries = False
    unreachable = client.CoreV1Api(metrics.instrument(client.ApiClient(configuration)))
    with pytest.raises(Exception):  # noqa: B017  (urllib3's, whichever it is)
        unreachable.read_namespace("ml")

    def errors_now(verb: str, code: str) -> float:
        return count(P + "api_errors_total", verb=verb, code=code) - errors[(verb, code)]

    assert errors_now("list", "403") == 1
    assert errors_now("get", "404") == 1
    assert errors_now("create", "409") == 1
    assert errors_now("get", "<error>") == 1
    # Requests by verb, failed or not: the denominator of an error rate.
    assert count(P + "api_requests_total", verb="list") - requests["list"] == 2
    assert count(P + "api_requests_total", verb="get") - requests["get"] == 2
    assert count(P + "api_requests_total", verb="create") - requests["create"] == 1


@pytest.mark.parametrize(
    ("method", "path", "verb", "resource"),
    [
        ("GET", "/api/v1/namespaces/ml/pods", "list", "pods"),
        ("GET", "/api/v1/namespaces/ml/pods/p", "get", "pods"),
        ("GET", "/api/v1/namespaces/ml/pods/p/log", "get", "pods/log"),
        ("GET", "/api/v1/namespaces", "list", "namespaces"),
        ("GET", "/api/v1/namespaces/ml", "get", "namespaces"),
        ("GET", f"/apis/{GROUP}/{VERSION}/finetunejobs", "list", "finetunejobs"),
        ("GET", f"/apis/{GROUP}/{VERSION}/namespaces/ml/finetunejobs/a", "get", "finetunejobs"),
        ("GET", "/version/", "get", ""),
        ("POST", "/api/v1/namespaces/ml/events", "create", "events"),
        (
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/ml/finetunejobs/a/status",
            "patch",
            "finetunejobs/status",
        ),
        ("PUT", "/apis/apps/v1/namespaces/ml/deployments/d", "update", "deployments"),
        ("DELETE", "/apis/batch/v1/namespaces/ml/jobs/j", "delete", "jobs"),
        ("DELETE", "/apis/batch/v1/namespaces/ml/jobs", "deletecollection", "jobs"),
    ],
)
def test_http_requests_map_to_kubernetes_verbs_and_resources(
    method: str, path: str, verb: str, resource: str
) -> None:
    """The labels an operator's dashboard groups API load by (what RBAC and audit say)."""
    url = f"https://10.0.0.1:6443{path}?labelSelector=a%3Db"
    assert metrics.verb(method, url) == verb
    assert metrics._verb_and_resource(method, url) == (verb, resource)


def test_the_metrics_endpoint_shows_leadership_and_webhook_decisions() -> None:
    denied = count(P + "webhook_decisions_total", kind="FineTuneJob", decision="denied")
    allowed = count(P + "webhook_decisions_total", kind="FineTuneJob", decision="allowed")
    metrics.webhook_decision("FineTuneJob", allowed=False)
    metrics.webhook_decision("FineTuneJob", allowed=False)
    metrics.webhook_decision("FineTuneJob", allowed=True)
    metrics.set_leader(True)
    server, thread = metrics.start_server(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read()
        assert value(P + "leader", text) == 1
        assert value(P + "webhook_decisions_total", text, kind="FineTuneJob", decision="denied") == denied + 2  # fmt: skip
        assert value(P + "webhook_decisions_total", text, kind="FineTuneJob", decision="allowed") == allowed + 1  # fmt: skip
        assert b"process_cpu_seconds_total" not in text  # our registry, not the global one
        metrics.set_leader(False)  # a standby replica
        with urllib.request.urlopen(url, timeout=5) as response:
            assert value(P + "leader", response.read()) == 0
        # Read at scrape time from the same check that gates the reconciles.
        holds_lease = threading.Event()
        metrics.register_leader_source(holds_lease.is_set)
        assert value(P + "leader") == 0
        holds_lease.set()
        with urllib.request.urlopen(url, timeout=5) as response:
            assert value(P + "leader", response.read()) == 1
    finally:
        metrics.set_leader(False)
        server.shutdown()
        server.server_close()
        thread.join(5)
