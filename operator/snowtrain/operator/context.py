"""What every reconcile shares: the clients, the settings, the server's capabilities and the
operator's cache of the newest version of every job (from watch events and its own writes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.kinds import AnyJob
from snowtrain.api.schedule import TrainingSchedule
from snowtrain.api.validation import InvalidJob, parse_job, parse_prediction, parse_schedule

from . import children as ch
from .index import ChildIndex
from .job_events import FIELD_SELECTOR, FailedCreates
from .kube import Kube, raw
from .settings import OperatorSettings

Key = tuple[str, str, str]
"""(kind, namespace, name) of a FineTuneJob, PretrainJob or BatchPrediction."""


def job_key(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def _resource_version(body: dict[str, Any]) -> int | None:
    rv = (body.get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


@dataclass
class Context:
    """What every reconcile needs: clients, settings, server capabilities, and the newest
    version of every job seen (from watch events and from our own status writes)."""

    kube: Kube
    settings: OperatorSettings
    caps: ch.Capabilities
    jobs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    last_log_read: dict[Key, float] = field(default_factory=dict)
    reporting_pod: dict[Key, str] = field(default_factory=dict)
    """The pod whose log had the trainer's events last time (rank 0's, among several)."""
    last_reconciled: dict[Key, float] = field(default_factory=dict)
    due: dict[Key, float] = field(default_factory=dict)
    """When (monotonic) a job that is not running should be looked at again without a watch
    event (``status.recheck_after``)."""
    serving_short: set[Key] = field(default_factory=set)
    """Decided jobs whose serving Deployment is short of ready pods: still looked at on
    ``due`` (a server that exits changes its pods, not the Deployment); other decided jobs
    only on events."""
    failed_creates: FailedCreates = field(init=False)
    """Why Jobs have no pods (the Job controller's FailedCreate Events), by namespace."""
    children: ChildIndex = field(default_factory=ChildIndex)
    """Every job's Jobs and pods, from the watches (what reconciles read instead of lists)."""
    guard: threading.Lock = field(default_factory=threading.Lock)
    events: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="events")
    )
    creates: ThreadPoolExecutor = field(init=False)
    """Creates a reconcile waits for but need not make one after another (a thread per
    reconcile worker, started when first needed)."""
    _parsed: dict[Key, tuple[tuple[Any, ...], Any]] = field(default_factory=dict)
    """Each resource's parsed spec (a job, a BatchPrediction, or why it is invalid)."""
    started: set[Key] = field(default_factory=set)
    """Jobs whose first attempt this process created (their next reconcile lists Jobs)."""
    defer_status: Callable[[Key], bool] = lambda key: False
    """Asked right after a new job's first Job was created: True when other new jobs are
    waiting, in which case the caller has queued this job again and its status (and
    Event) are written then. In a burst every job gets its Job before any status write
    competes with the Job creates on the API server."""

    def __post_init__(self) -> None:
        self.failed_creates = FailedCreates(self._list_failed_creates)
        workers = self.settings.max_workers if self.settings is not None else 1
        self.creates = ThreadPoolExecutor(workers, thread_name_prefix="create")

    def _list_failed_creates(self, namespace: str) -> list[dict[str, Any]]:
        # From the watch cache (resourceVersion 0): a quorum read would scan every Event of
        # the namespace in etcd, and a burst of new jobs leaves thousands there.
        answer = raw(
            self.kube.core.list_namespaced_event,
            namespace,
            field_selector=FIELD_SELECTOR,
            resource_version="0",
        )
        items: list[dict[str, Any]] = answer["items"]
        return items

    def remember(self, body: dict[str, Any]) -> None:
        """Keep ``body`` unless a newer version of the job is known already.

        A reconcile reads the job from here instead of the API server. Our own status write
        returns the written object, which arrives here before its watch event: without the
        version check, the late event would hand the next reconcile the status from before
        that write (and it would announce the same phase transition twice). The API server's
        resourceVersion is an etcd revision; were it ever not a number, newest-arrival wins.
        """
        key = job_key(body)
        meta = body.get("metadata") or {}
        if "managedFields" in meta:  # the API server's bookkeeping; never read, often large
            body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        with self.guard:
            old = self.jobs.get(key)
            new_rv, old_rv = _resource_version(body), _resource_version(old) if old else None
            if old is None or new_rv is None or old_rv is None or new_rv >= old_rv:
                self.jobs[key] = body

    def parsed(self, key: Key, body: dict[str, Any]) -> AnyJob:
        """The job's spec validated (:func:`parse_job`), once per version of what the
        model holds: spec changes bump ``metadata.generation``, label and annotation changes
        do not, so those are part of the key. Raises :class:`InvalidJob` like parse_job."""
        job: AnyJob = self._parsed_once(key, body, parse_job)
        return job

    def parsed_prediction(self, key: Key, body: dict[str, Any]) -> BatchPrediction:
        """A BatchPrediction's spec validated (:func:`parse_prediction`), as :meth:`parsed`."""
        job: BatchPrediction = self._parsed_once(key, body, parse_prediction)
        return job

    def parsed_schedule(self, key: Key, body: dict[str, Any]) -> TrainingSchedule:
        """A TrainingSchedule's spec validated (:func:`parse_schedule`), as :meth:`parsed`."""
        schedule: TrainingSchedule = self._parsed_once(key, body, parse_schedule)
        return schedule

    def _parsed_once(
        self, key: Key, body: dict[str, Any], parse: Callable[[dict[str, Any]], Any]
    ) -> Any:
        meta = body.get("metadata") or {}
        stamp = (
            meta.get("uid"),
            meta.get("generation"),
            repr(meta.get("labels")),
            repr(meta.get("annotations")),
        )
        with self.guard:
            cached = self._parsed.get(key)
        if cached is not None and cached[0] == stamp:
            if isinstance(cached[1], InvalidJob):
                raise InvalidJob(cached[1].errors)  # a fresh one: a re-raise grows its traceback
            return cached[1]
        result: Any
        try:
            result = parse({k: v for k, v in body.items() if k != "status"})
        except InvalidJob as exc:
            result = exc
        with self.guard:
            self._parsed[key] = (stamp, result)
        if isinstance(result, InvalidJob):
            raise result
        return result

    def forget(self, key: Key) -> None:
        with self.guard:
            self.jobs.pop(key, None)
            self._parsed.pop(key, None)
            self.started.discard(key)
        self.last_log_read.pop(key, None)
        self.reporting_pod.pop(key, None)
        self.last_reconciled.pop(key, None)
        self.due.pop(key, None)
        self.serving_short.discard(key)

    def known(self) -> list[tuple[Key, dict[str, Any]]]:
        with self.guard:
            return list(self.jobs.items())
