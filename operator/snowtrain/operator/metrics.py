"""Prometheus metrics of the operator, served on ``/metrics`` by :func:`start_server`.

Everything lives in one dedicated :data:`REGISTRY` rather than prometheus_client's global
one: the trainer (same namespace package) registers its own metrics globally, and tests
import both. The metric objects are module-level and cheap, so the work queue and the
reconcile loop record into them whether or not a server runs.

Values that are a snapshot of state (queue depth, jobs by phase, leadership) are computed
at scrape time from the live objects instead of being kept up to date on every change: a
scrape is rare, a change is not, and a snapshot cannot drift from the truth.

The Kubernetes API is counted at one place, the API client's transport
(:func:`instrument`): every typed API class built on that client (core, batch, apps,
custom objects, version) goes through it, so no call site needs to remember to count.
kopf's own watches use kopf's aiohttp client and are not counted here.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIServer

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from snowtrain.api.status import Phase
from snowtrain.api.validation import RESOURCE_KINDS

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "snowtrain_operator_"

# A reconcile is a few API calls: milliseconds when served from caches, seconds when the
# API server is loaded; a queue wait grows to minutes while a burst of jobs drains.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (*DURATION_BUCKETS, 60, 120, 300)

RECONCILE_DURATION = Histogram(
    PREFIX + "reconcile_duration_seconds",
    "Time one reconcile of a job took. outcome: ok; gone (the job was deleted); "
    "error (raised, retried by the work queue with backoff).",
    ["kind", "outcome"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WAIT = Histogram(
    PREFIX + "workqueue_wait_seconds",
    "Time a key waited in the work queue, from being added (or due) to a worker taking it.",
    ["queue"],
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    PREFIX + "workqueue_retries",
    "Failed runs of a key, each queued again after a backoff.",
    ["queue"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    PREFIX + "api_requests",
    "Kubernetes API requests sent by the operator's API client, by verb and resource "
    "(with its subresource: pods/log, finetunejobs/status).",
    ["verb", "resource"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    PREFIX + "api_errors",
    "Kubernetes API requests that failed, by verb and HTTP status "
    "(code '<error>': no answer, e.g. connection refused or a timeout).",
    ["verb", "code"],
    registry=REGISTRY,
)
WEBHOOK_DECISIONS = Counter(
    PREFIX + "webhook_decisions",
    "Admission reviews of FineTuneJobs/PretrainJobs by the validating webhook.",
    ["kind", "decision"],
    registry=REGISTRY,
)


# -- state snapshots at scrape time ---------------------------------------------------------
class QueueLike(Protocol):
    """What the depth collector reads from a :class:`~.workqueue.WorkQueue`."""

    @property
    def name(self) -> str: ...

    def counts(self) -> tuple[int, int, int]:
        """(ready, delayed, running) keys."""
        ...


_QUEUE_GAUGES = (  # in the order of QueueLike.counts()
    ("depth", "Keys ready to run now."),
    ("delayed", "Keys waiting for their due time (a retry's backoff, an echo delay)."),
    ("running", "Keys a worker is processing."),
)

JobsSource = Callable[[], Iterable[tuple[tuple[str, str, str], dict[str, Any]]]]
"""Returns (key, body) of every known job, key = (kind, namespace, name)."""


class _StateCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: weakref.WeakSet[QueueLike] = weakref.WeakSet()
        self.jobs: JobsSource | None = None
        self.leader: Callable[[], bool] = lambda: False

    def track(self, queue: QueueLike) -> None:
        with self._lock:
            self._queues.add(queue)

    def untrack(self, queue: QueueLike) -> None:
        with self._lock:
            self._queues.discard(queue)

    def collect(self) -> Iterator[Metric]:
        yield from self._queue_metrics()
        yield from self._job_metrics()
        leader = GaugeMetricFamily(
            PREFIX + "leader",
            "1 while this replica is the active operator (it reconciles), 0 while it stands by.",
        )
        with contextlib.suppress(Exception):  # not started yet: no claim either way
            leader.add_metric([], 1 if self.leader() else 0)
        yield leader

    def _queue_metrics(self) -> Iterator[Metric]:
        families = [
            GaugeMetricFamily(PREFIX + "workqueue_" + name, doc, labels=["queue"])
            for name, doc in _QUEUE_GAUGES
        ]
        with self._lock:
            queues = list(self._queues)
        totals: dict[str, list[int]] = {}
        for q in queues:  # queues sharing a name add up
            total = totals.setdefault(q.name, [0, 0, 0])
            for i, n in enumerate(q.counts()):
                total[i] += n
        for name, total in sorted(totals.items()):
            for family, n in zip(families, total, strict=True):
                family.add_metric([name], n)
        yield from families

    def _job_metrics(self) -> Iterator[Metric]:
        source = self.jobs
        if source is None:  # not started: no claim about how many jobs there are
            return
        try:
            known = list(source())
        except Exception:  # a scrape must not fail because the operator is starting up
            return
        # Every kind x phase is present, zeros included, so a dashboard line drops to 0
        # instead of vanishing when the last job leaves a phase.
        counts = {(kind, str(phase)): 0 for kind in RESOURCE_KINDS for phase in Phase}
        for (kind, _, _), body in known:
            phase = str((body.get("status") or {}).get("phase") or Phase.PENDING)
            counts[(kind, phase)] = counts.get((kind, phase), 0) + 1
        family = GaugeMetricFamily(
            PREFIX + "jobs",
            "FineTuneJobs, PretrainJobs and BatchPredictions the operator knows, by phase.",
            labels=["kind", "phase"],
        )
        for (kind, phase), n in sorted(counts.items()):
            family.add_metric([kind, phase], n)
        yield family


_STATE = _StateCollector()
REGISTRY.register(_STATE)


def track_queue(queue: QueueLike) -> None:
    """Report ``queue``'s depth while it lives (weakly held) or until :func:`untrack_queue`."""
    _STATE.track(queue)


def untrack_queue(queue: QueueLike) -> None:
    _STATE.untrack(queue)


def register_jobs_source(source: JobsSource | None) -> None:
    """Count jobs by kind and phase from ``source()`` -> iterable of (key, body) at each
    scrape (key = (kind, namespace, name)); None stops reporting them."""
    _STATE.jobs = source


# -- events ---------------------------------------------------------------------------------
def set_leader(leader: bool) -> None:
    """Report this replica as the leader (or not) until told otherwise."""
    _STATE.leader = lambda: leader


def register_leader_source(source: Callable[[], bool]) -> None:
    """Read leadership from ``source()`` at each scrape instead: the same check that gates
    the reconciles, so the gauge cannot disagree with what the replica does."""
    _STATE.leader = source


def webhook_decision(kind: str, allowed: bool) -> None:
    WEBHOOK_DECISIONS.labels(kind, "allowed" if allowed else "denied").inc()


# -- the Kubernetes API client ------------------------------------------------------------
def _api_target(path: str) -> tuple[bool, str]:
    """What a Kubernetes API path names: whether it is a collection (``.../pods``) rather
    than one object or its subresource (``.../pods/p``, ``.../pods/p/log``), and the
    resource (``pods``, ``pods/log``; ``""`` for /version, /healthz, discovery)."""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        if part in ("api", "apis"):
            rest = parts[i + (2 if part == "api" else 3) :]  # past the (group and) version
            break
    else:
        return False, ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # namespaces/{ns}/{resource}/...
    if not rest:
        return False, ""
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    return len(rest) == 1, resource


def verb(method: str, url: str) -> str:
    """The Kubernetes verb (as RBAC and audit logs name it) of an HTTP request."""
    return _verb_and_resource(method, url)[0]


def _verb_and_resource(method: str, url: str) -> tuple[str, str]:
    collection, resource = _api_target(urlsplit(url).path)
    method = method.upper()
    simple = {"POST": "create", "PUT": "update", "PATCH": "patch"}
    if method in simple:
        return simple[method], resource
    if method == "DELETE":
        return ("deletecollection" if collection else "delete"), resource
    if method in ("GET", "HEAD"):
        return ("list" if collection else "get"), resource
    return method.lower(), resource


def instrument(api_client: ApiClient) -> ApiClient:
    """Count every request ``api_client`` sends, and its failures; returns ``api_client``.

    Wraps the client's REST transport, which both kubernetes-client generations go
    through: the older one raises :class:`ApiException` there for a non-2xx answer, the
    newer one returns the response and raises later, so both are counted. Idempotent.
    """
    rest = api_client.rest_client
    if getattr(rest, "_snowtrain_counted", False):
        return api_client
    send: Callable[..., Any] = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        v, resource = _verb_and_resource(method, url)
        API_REQUESTS.labels(v, resource).inc()
        try:
            response = send(method, url, *args, **kwargs)
        except ApiException as exc:
            API_ERRORS.labels(v, str(exc.status or "<error>")).inc()
            raise
        except Exception:
            API_ERRORS.labels(v, "<error>").inc()
            raise
        status = getattr(response, "status", 200)
        if not 200 <= status <= 299:
            API_ERRORS.labels(v, str(status)).inc()
        return response

    rest.request = request  # type: ignore[method-assign]
    rest._snowtrain_counted = True  # type: ignore[attr-defined]
    return api_client


# -- exposition ---------------------------------------------------------------------------
def render() -> bytes:
    """The ``/metrics`` text of :data:`REGISTRY`."""
    return generate_latest(REGISTRY)


def start_server(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` from :data:`REGISTRY` on a daemon thread; returns the server
    (``shutdown()`` stops it) and its thread."""
    return start_http_server(port, addr, registry=REGISTRY)
