"""List + watch of the operator's children (batch Jobs, pods) into the child index.

Why not kopf's watches, which serve the jobs themselves: kopf runs every event of every
watched object through its per-object workers and handler machinery, several times the cost
of the event itself, and most of the operator's events are its children's (a Job's and its
pod's status changes, each several times per attempt). Here a thread per kind reads the watch
stream, decodes each event once, updates the index and tells the operator which job to look
at: client-go's Reflector, the loop every Go controller gets from its informers.

The loop: list (from the API server's watch cache), replace the index's view of the kind with
what was listed (so an object deleted while no watch ran is dropped), then watch from the
list's resourceVersion, resuming from the newest version seen when a watch ends. A watch
that answers 410 Gone (its version was compacted away), or fails, lists again after a
backoff.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from . import children as ch
from .index import ChildIndex
from .kube import Kube, raw

log = logging.getLogger("snowtrain.operator")

EventSink = Callable[[str | None, dict[str, Any]], None]
"""Called with (event type, object) for every change after the index has it; the type is
None for objects found by a list."""

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class ChildInformer:
    """One kind of child (``Job`` or ``Pod``) in one namespace, or cluster-wide (None)."""

    def __init__(
        self,
        kube: Kube,
        kind: str,
        namespace: str | None,
        index: ChildIndex,
        sink: EventSink,
        *,
        watch_timeout_seconds: int = 300,
        request_timeout_seconds: float = 330.0,
    ) -> None:
        listers: tuple[Callable[..., Any], Callable[..., Any]]
        if kind == "Job":
            listers = (kube.batch.list_namespaced_job, kube.batch.list_job_for_all_namespaces)
        elif kind == "Pod":
            listers = (kube.core.list_namespaced_pod, kube.core.list_pod_for_all_namespaces)
        else:
            raise ValueError(f"no informer for {kind}")
        self.kind, self.namespace = kind, namespace
        self._list_fn: Callable[..., Any] = listers[0] if namespace else listers[1]
        self._args: tuple[str, ...] = (namespace,) if namespace else ()
        self._index, self._sink = index, sink
        self._watch_timeout = watch_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self._stopped = False

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
                where = self.namespace or "all namespaces"
                log.warning(
                    "watching %ss in %s failed (%s); listing again in %.0f s",
                    self.kind, where, exc, delay,
                )  # fmt: skip
                time.sleep(delay)

    def _list(self) -> str:
        answer = raw(self._list_fn, *self._args, label_selector=ch.LABEL_JOB, resource_version="0")
        version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        items = [{**item, "kind": self.kind} for item in answer.get("items") or []]
        self._index.replace(self.kind, self.namespace, items, version)
        for item in items:
            self._sink(None, item)
        return version

    def _watch(self, version: str) -> None:
        """Watch from ``version`` until the stream is gone (410) or stopped; raises on errors."""
        while not self._stopped:
            response = self._list_fn(
                *self._args,
                label_selector=ch.LABEL_JOB,
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
                    self._index.observe(obj, deleted=etype == "DELETED")
                    self._sink(etype, obj)
                    if self._stopped:
                        return
            finally:
                response.release_conn()
