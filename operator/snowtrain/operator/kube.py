"""The operator's Kubernetes client plumbing: the API clients, cheap calls, and creating a
child only ever for its own job.

Everything here is about *how* to talk to the API server (unparsed JSON, pooled connections,
the watch cache, what a 4xx on a create means); :mod:`.reconcile` decides *what* to do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from snowtrain.api.status import FailureReason as R

from . import children as ch
from . import metrics

log = logging.getLogger("snowtrain.operator")


@dataclass
class Kube:
    """The API clients one operator process uses (shared by all threads); its requests
    and API errors are counted by verb (:func:`metrics.instrument`)."""

    api: client.ApiClient
    core: client.CoreV1Api = field(init=False)
    batch: client.BatchV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    networking: client.NetworkingV1Api = field(init=False)
    custom: client.CustomObjectsApi = field(init=False)

    def __post_init__(self) -> None:
        metrics.instrument(self.api)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.networking = client.NetworkingV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def capabilities(self) -> ch.Capabilities:
        info = client.VersionApi(self.api).get_code()
        return ch.Capabilities.from_version(info.major, info.minor)


class ChildRefused(Exception):
    """A child cannot be made: the API server refused it (a 4xx other than a conflict), or
    an object that is not this job's holds its name. Retrying would not help; the job says
    why (reason, message) instead of hanging."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def owned_by(obj: dict[str, Any] | None, uid: str | None) -> bool:
    """The object names the job (by uid, not by name: a deleted and re-created job of the
    same name is another owner) among its owners."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(ref.get("uid") == uid for ref in refs)


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def create_child(
    fn: Callable[..., Any],
    namespace: str,
    body: dict[str, Any],
    read: Callable[..., Any] | None = None,
) -> dict[str, Any] | None:
    """Create; the object as the API server answered it (uid, resourceVersion, defaults),
    or None when it exists already and is this job's (409: an idempotent re-run).

    With ``read`` (the matching read method), an existing object is read and must name the
    job's uid among its owners: another object of the name is never adopted, replaced or
    used (ChildRefused, Conflict). A refusal (400, 403, 422) is ChildRefused too.
    """
    kind, name = body["kind"], body["metadata"]["name"]
    try:
        created: dict[str, Any] = raw(fn, namespace, body)
        log.info("created %s %s/%s", kind, namespace, name)
        return created
    except ApiException as exc:
        if exc.status in (400, 422):
            raise ChildRefused(
                R.INVALID_SPEC, f"the API server refused {kind} {name}: {_api_message(exc)}"
            ) from exc
        if exc.status == 403:
            raise ChildRefused(
                R.FORBIDDEN, f"the API server refused {kind} {name}: {_api_message(exc)}"
            ) from exc
        if exc.status != 409:
            raise
    if read is not None:
        uid = (body["metadata"].get("ownerReferences") or [{}])[0].get("uid")
        existing = get_or_none(raw, read, name, namespace)
        if existing is not None and not owned_by(existing, uid):
            raise ChildRefused(R.CONFLICT, f"{kind} {name} already exists and is not this job's")
    return None


def get_or_none(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def send(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call a kubernetes-client method whose answer we do not need.

    Unparsed (``_preload_content=False``), but drained and handed back to the connection
    pool: an unread response keeps its connection, so the next request would open a new
    one and pay a TLS handshake on both ends (it was a third of the operator's CPU when
    hundreds of jobs were created at once).
    """
    response = fn(*args, _preload_content=False, **kwargs)
    response.drain_conn()
    response.release_conn()


def raw(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a kubernetes-client method and return the JSON the API sent, as plain dicts.

    Skipping the client's model deserialisation (``_preload_content=False``) keeps the
    camelCase wire shape the pure core reads, and is several times cheaper for pod lists --
    it matters with hundreds of jobs on two cores. Errors still raise ApiException.
    """
    response = fn(*args, _preload_content=False, **kwargs)
    data = response.data
    response.release_conn()  # back to the pool (a no-op when the full read did it already)
    return json.loads(data) if data else None


def delete_child(fn: Callable[..., Any], name: str, namespace: str, **kwargs: Any) -> bool:
    """Delete; False when it was gone already (404). Through :func:`raw`: a Service delete
    answers a Status (not a Service) on older API servers, which the client's model
    deserialisation rejects after the delete succeeded."""
    try:
        raw(fn, name, namespace, **kwargs)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch turning ``old`` into ``new`` (removed keys become null)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch


def list_children(
    fn: Callable[..., Any], namespace: str, labels: dict[str, str]
) -> list[dict[str, Any]]:
    """Children by label, served from the API server's watch cache (``resourceVersion=0``).

    A quorum read would scan every object of the kind in the namespace in etcd, per
    reconcile: with hundreds of jobs that is quadratic work for the control plane. The
    cache may trail etcd by moments; creates are idempotent (deterministic names, 409), and
    the watch event of any change we miss triggers another reconcile.
    """
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    answer = raw(fn, namespace, label_selector=selector, resource_version="0")
    items: list[dict[str, Any]] = answer["items"]
    return items
