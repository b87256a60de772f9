"""Why a Job has no pods: the Job controller's FailedCreate Events, one list per namespace.

A Job whose pods are refused (a ResourceQuota, Pod Security admission, a policy webhook)
never gets a pod whose status could say why; only the Job controller's ``FailedCreate``
Events do, and the operator watches no Events. Listing one Job's Events per reconcile made
the API server scan every Event of the namespace for each reconcile of each Job still
without pods: a burst of a thousand Jobs, waiting for the Job controller to create their
pods at its own pace, meant thousands of scans of thousands of Events. Here every reconcile
of a namespace shares one list of that namespace's FailedCreate Events (filtered by the API
server) for up to :data:`MAX_AGE_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

MAX_AGE_SECONDS = 10.0
"""How old a namespace's list may be when a reconcile reads it (a refused pod is a matter
of minutes: the stuck timeout)."""

Lister = Callable[[str], list[dict[str, Any]]]
"""namespace -> the FailedCreate Events of its Jobs."""

FIELD_SELECTOR = "involvedObject.kind=Job,reason=FailedCreate"


class FailedCreates:
    """FailedCreate Events by Job name, one list per namespace at most every
    :data:`MAX_AGE_SECONDS`; concurrent readers of a namespace wait for one list."""

    def __init__(self, lister: Lister) -> None:
        self._lister = lister
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._lists: dict[str, tuple[float, dict[str, list[dict[str, Any]]]]] = {}

    def of(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        """The Job's FailedCreate Events, as of at most MAX_AGE_SECONDS ago."""
        with self._guard:
            lock = self._locks.setdefault(namespace, threading.Lock())
        with lock:
            listed = self._lists.get(namespace)
            if listed is None or time.monotonic() - listed[0] >= MAX_AGE_SECONDS:
                by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for event in self._lister(namespace):
                    by_job[str((event.get("involvedObject") or {}).get("name"))].append(event)
                listed = (time.monotonic(), dict(by_job))
                self._lists[namespace] = listed
        return listed[1].get(job_name, [])
