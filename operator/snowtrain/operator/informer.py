"""List + watch: the operator's own watches of its jobs and their children (batch Jobs, pods).

Why not kopf's watches: kopf runs every event of every watched object through its
per-object workers and handler machinery, several times the cost of decoding the event,
and every job brings a dozen events (its own status writes, its Job's and pod's status
changes). Here a thread per kind and namespace reads the watch stream, decodes each event
once and hands it on: client-go's Reflector, the loop every Go controller gets from its
informers. (kopf still serves the admission webhook, the liveness probe and the serving
Deployments' watch.)

The loop: list (from the API server's watch cache), hand over the whole list (so what was
deleted while no watch ran can be dropped), then watch from the list's resourceVersion,
resuming from the newest version seen when a watch request ends. A watch that answers
410 Gone (its version was compacted away), or fails, lists again after a backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from snowtrain.api.kinds import GROUP, VERSION
from snowtrain.api.validation import RESOURCE_KINDS

from . import children as ch
from .index import ChildIndex
from .kube import Kube, raw

log = logging.getLogger("snowtrain.operator")

EventSink = Callable[[str | None, dict[str, Any]], None]
"""Called with (event type, object) for every change; the type is None for objects found by
a list."""
ListSink = Callable[[list[dict[str, Any]], str], None]
"""Called with a complete list (objects stamped with their kind) and its resourceVersion."""

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class Informer:
    """One kind in one namespace, or cluster-wide: ``list_fn`` is the client's list method
    (namespaced, with ``args`` naming the namespace, or for all namespaces)."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        args: tuple[str, ...],
        on_list: ListSink,
        on_event: EventSink,
        *,
        label_selector: str | None = None,
        api_version: str | None = None,
        where: str = "all namespaces",
        watch_timeout_seconds: int = 300,
        request_timeout_seconds: float = 330.0,
    ) -> None:
        self.kind, self.where = kind, where
        self._list_fn, self._args = list_fn, args
        self._on_list, self._on_event = on_list, on_event
        self._selector = {"label_selector": label_selector} if label_selector else {}
        # A list's items may lack the kind and apiVersion that watch events carry.
        self._stamp = {"kind": kind, **({"apiVersion": api_version} if api_version else {})}
        self._watch_timeout = watch_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self._stopped = False

    def start(self) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_forever, name=f"watch-{self.kind.lower()}s", daemon=True
        )
        thread.start()
        return thread

    def stop(self) -> None:
        """End the loop after the current watch request (it times out on its own)."""
        self._stopped = True

    def run_forever(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                version = self._list()
                failures = 0
                self._watch(version)
            except Exception as exc:  # an outage, a refusal: list again after a pause
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                log.warning(
                    "watching %ss in %s failed (%s); listing again in %.0f s",
                    self.kind, self.where, exc, delay,
                )  # fmt: skip
                time.sleep(delay)

    def _list(self) -> str:
        answer = raw(self._list_fn, *self._args, resource_version="0", **self._selector)
        version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        self._on_list([{**item, **self._stamp} for item in answer.get("items") or []], version)
        return version

    def _watch(self, version: str) -> None:
        """Watch from ``version`` until the stream is gone (410) or stopped; raises on errors."""
        while not self._stopped:
            response = self._list_fn(
                *self._args,
                **self._selector,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=version,
                timeout_seconds=self._watch_timeout,
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
            try:
                status = getattr(response, "status", 200)
                if not 200 <= status <= 299:
                    raise ApiException(status=status, reason=getattr(response, "reason", ""))
                for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                    if not line or line.isspace():
                        continue
                    event = json.loads(line)
                    etype, obj = event.get("type"), event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            return  # compacted away: list again
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if etype == "BOOKMARK":
                        continue
                    self._on_event(etype, obj)
                    if self._stopped:
                        return
            finally:
                # Closed first: a stream left mid-way must not go back to the pool unread.
                response.close()
                response.release_conn()


def watched_lister(
    kube: Kube, kind: str, namespace: str | None
) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """The client method that lists (and with ``watch=True`` watches) ``kind`` in
    ``namespace`` (None: all namespaces), and its leading arguments. Every informer's method
    comes from here, so the RBAC check (tests/unit/test_rbac.py) grants list and watch on
    exactly what is named here."""
    ns_args: tuple[str, ...] = (namespace,) if namespace else ()
    if kind == "Job":
        batch = kube.batch
        return (batch.list_namespaced_job if namespace else batch.list_job_for_all_namespaces), ns_args  # fmt: skip
    if kind == "Pod":
        core = kube.core
        return (core.list_namespaced_pod if namespace else core.list_pod_for_all_namespaces), ns_args  # fmt: skip
    plural = RESOURCE_KINDS[kind].PLURAL  # a FineTuneJob, PretrainJob or BatchPrediction
    custom = kube.custom
    if namespace:
        return custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, plural)
    return custom.list_cluster_custom_object, (GROUP, VERSION, plural)


def child_informer(
    kube: Kube,
    kind: str,
    namespace: str | None,
    index: ChildIndex,
    sink: EventSink,
    **timeouts: Any,
) -> Informer:
    """Jobs or pods carrying the job label, into ``index``; then ``sink`` hears of each
    (after the index has it: a reconcile it triggers sees at least that change)."""
    list_fn, args = watched_lister(kube, kind, namespace)

    def listed(items: list[dict[str, Any]], version: str) -> None:
        index.replace(kind, namespace, items, version)
        for item in items:
            sink(None, item)

    def changed(etype: str | None, obj: dict[str, Any]) -> None:
        index.observe(obj, deleted=etype == "DELETED")
        sink(etype, obj)

    return Informer(
        kind,
        list_fn,
        args,
        listed,
        changed,
        label_selector=ch.LABEL_JOB,
        where=namespace or "all namespaces",
        **timeouts,
    )
