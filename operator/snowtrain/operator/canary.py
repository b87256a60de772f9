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
from .server_pods import first_crash, ready_since, server_pods

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
    """Readiness, a crashed server and request counts of the canary Deployment's pods."""
    pods = server_pods(ctx, deployment)  # a leaving pod is not the canary
    ready = [p for p in pods if ready_since(p) is not None and (p.get("status") or {}).get("podIP")]
    since = max((ready_since(p) or "" for p in ready), default="") or None
    requests = errors = 0
    for pod in ready:
        text = _scrape(pod["status"]["podIP"], port)
        if text is not None:
            r, e = request_counts(text)
            requests, errors = requests + r, errors + e
    return CanaryHealth(
        ready=len(ready),
        requests=requests,
        errors=errors,
        ready_since=since,
        crashed=first_crash(pods),
    )
