"""A canary's health: its pods' readiness, whether its server crashed, and the error rate of
the requests they answered.

The error rate comes from the model server's own ``/metrics`` (the request counter by
status code), read from each ready canary pod on its serving port: the operator needs no
metrics stack. Health checks and ``/metrics`` itself are not requests.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .context import Context
from .kube import list_children

log = logging.getLogger("snowtrain.operator")

REQUESTS_METRIC = "snowtrain_request_duration_seconds"
NOT_REQUESTS = ("/healthz", "/readyz", "/metrics")
SCRAPE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class CanaryHealth:
    ready: int
    """Canary pods ready."""
    requests: int
    """Requests the ready canary pods answered."""
    errors: int
    """Of those, answered with a 5xx."""
    ready_since: str | None = None
    """When the last of the ready pods got ready (RFC 3339): the canary's clock."""
    crashed: str | None = None
    """Why a canary pod's server ended, when one did: no need to wait out the ready timeout
    for a model that cannot load."""


def request_counts(metrics_text: str) -> tuple[int, int]:
    """(requests, 5xx answers) from a model server's /metrics text."""
    requests = errors = 0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != REQUESTS_METRIC:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_count"):
                continue
            if sample.labels.get("route") in NOT_REQUESTS:
                continue
            count = int(sample.value)
            requests += count
            if str(sample.labels.get("status", "")).startswith("5"):
                errors += count
    return requests, errors


def _ready_since(pod: dict[str, Any]) -> str | None:
    """When the pod got ready (its Ready condition's transition), None when it is not."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return str(c.get("lastTransitionTime") or "")
    return None


#: How much of a crashed server's termination message (its log's tail) a rollback quotes.
CRASH_MESSAGE_CHARS = 300


def crash_of(pod: dict[str, Any]) -> str | None:
    """Why the pod's server ended (exit code, reason, the last line it wrote), None while it
    never has. A server only ends on its own when it failed: a model that would not load, a
    liveness kill, the OOM killer. An exit on SIGTERM is the pod leaving, not a crash, and
    leaving pods are not asked."""
    name = (pod.get("metadata") or {}).get("name", "?")
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state"), cs.get("lastState")):
            ended = (state or {}).get("terminated")
            if not ended or (ended.get("exitCode") == 0 and ended.get("reason") != "OOMKilled"):
                continue
            lines = [ln for ln in str(ended.get("message") or "").splitlines() if ln.strip()]
            said = f": {lines[-1].strip()[-CRASH_MESSAGE_CHARS:]}" if lines else ""
            restarts = int(cs.get("restartCount") or 0)
            return (
                f"canary pod {name}'s server exited {ended.get('exitCode')} "
                f"({ended.get('reason') or 'Error'}, {restarts} restart(s)){said}"
            )
    return None


def _scrape(ip: str, port: int) -> str | None:
    try:
        with urllib.request.urlopen(
            f"http://{ip}:{port}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS
        ) as answer:
            return str(answer.read().decode("utf-8", "replace"))
    except OSError as exc:
        log.info("cannot read canary metrics from %s: %s", ip, exc)
        return None


def canary_health(ctx: Context, deployment: dict[str, Any], port: int) -> CanaryHealth:
    """Readiness and request counts of the canary Deployment's pods."""
    meta = deployment["metadata"]
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    pods = [
        p
        for p in list_children(ctx.kube.core.list_namespaced_pod, meta["namespace"], selector)
        if not (p.get("metadata") or {}).get("deletionTimestamp")  # leaving: not the canary
    ]
    ready = [
        p for p in pods if _ready_since(p) is not None and (p.get("status") or {}).get("podIP")
    ]
    crashed = next((why for why in map(crash_of, pods) if why), None)
    since = max((_ready_since(p) or "" for p in ready), default="") or None
    requests = errors = 0
    for pod in ready:
        text = _scrape(pod["status"]["podIP"], port)
        if text is not None:
            r, e = request_counts(text)
            requests, errors = requests + r, errors + e
    return CanaryHealth(
        ready=len(ready), requests=requests, errors=errors, ready_since=since, crashed=crashed
    )
