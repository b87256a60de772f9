"""A keyed work queue: priorities, one worker per key, coalescing, delays and retries.

Why the operator has one instead of running reconciles inside kopf's handlers: watch events
only *say that* a job needs a look. Hundreds arrive at once when jobs are applied in bulk
(each job's own event, then its Job's and pod's), and running one reconcile per event, in
arrival order, makes a newly applied job wait behind the echoes of every job before it. Here
an event only adds the job's key; a fixed pool of threads reconciles keys, most urgent first:

- a key is queued at most once; adding it again keeps the more urgent priority and ORs the
  flag, so a burst of events costs one reconcile, not one each;
- a key is processed by one worker at a time; added while it is processed, it runs again
  right after (the reconcile that is running may have read the state before the change);
- lower priority numbers go first, FIFO within a priority;
- a failed run is retried after an exponential backoff per key, reset by a success;
- ``add_after`` delays a key, and further ``add_after`` calls for it before it is due fold
  into that one entry: the echoes of one change (a Job's status, then its pod's, a moment
  apart) cost one reconcile instead of one each.

These are the semantics of client-go's workqueue, which controller-runtime builds on; the
blocking Kubernetes client calls are why workers are threads. Like client-go's, the queue
reports its depth, how long keys wait and how often runs are retried
(:mod:`snowtrain.operator.metrics`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from kubernetes.client.exceptions import ApiException

from . import metrics

log = logging.getLogger("snowtrain.operator")

K = TypeVar("K", bound=Hashable)

Handler = Callable[[K, bool], None]
"""Processes one key; the bool is the OR of the flags it was added with since its last run."""


class WorkQueue(Generic[K]):
    """Runs ``handler(key, flag)`` on ``workers`` threads, most urgent key first."""

    def __init__(
        self,
        handler: Handler[K],
        workers: int,
        *,
        name: str = "reconcile",
        base_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._handler = handler
        self._workers = workers
        self._name = name
        self._base_delay, self._max_delay = base_delay, max_delay
        self._cond = threading.Condition()
        self._ready: list[tuple[int, int, K]] = []  # heap of (priority, seq, key)
        self._queued: dict[K, tuple[int, bool, int]] = {}  # key -> (priority, flag, seq)
        self._delayed: list[tuple[float, int, K]] = []  # heap of (due, seq, key)
        self._waiting: dict[K, tuple[int, bool, int]] = {}  # delayed key -> (prio, flag, seq)
        self._processing: set[K] = set()
        self._again: dict[K, tuple[int, bool]] = {}  # added while processing
        self._failures: dict[K, int] = {}
        self._added: dict[K, float] = {}  # when a key not yet taken was first added
        self._wait = metrics.WORKQUEUE_WAIT.labels(name)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(name)
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        metrics.track_queue(self)

    # -- producers ------------------------------------------------------------------------
    def add(self, key: K, priority: int, flag: bool = False) -> None:
        """Queue ``key`` (or make its queued entry more urgent / flagged)."""
        with self._cond:
            self._add(key, priority, flag)

    def add_after(self, key: K, delay: float, priority: int, flag: bool = False) -> None:
        """Queue ``key`` once ``delay`` seconds have passed (sooner if it is already
        queued, running, or waiting with an earlier due time: it is merged into that)."""
        with self._cond:
            self._add_after(key, delay, priority, flag)

    def _add_after(self, key: K, delay: float, priority: int, flag: bool) -> None:
        if key in self._queued or key in self._processing:
            self._add(key, priority, flag)
            return
        waiting = self._waiting.get(key)
        if waiting is not None:  # keep its due time: a stream of echoes must not starve it
            p, f, seq = waiting
            self._waiting[key] = (min(p, priority), f or flag, seq)
            return
        seq = next(self._seq)
        self._waiting[key] = (priority, flag, seq)
        heapq.heappush(self._delayed, (time.monotonic() + delay, seq, key))
        self._cond.notify()

    def forget(self, key: K) -> None:
        """Drop the key's retry history (its object is gone)."""
        with self._cond:
            self._failures.pop(key, None)

    def _add(self, key: K, priority: int, flag: bool) -> None:
        # Its wait counts from the first add; one added while it runs waits from then for
        # its next run (client-go measures the same).
        self._added.setdefault(key, time.monotonic())
        if key in self._processing:
            p, f = self._again.get(key, (priority, False))
            self._again[key] = (min(p, priority), f or flag)
            return
        current = self._queued.get(key)
        if current is not None:
            p, f, seq = current
            if priority < p:  # re-file it further ahead; the old heap entry becomes stale
                p, seq = priority, next(self._seq)
                heapq.heappush(self._ready, (p, seq, key))
            self._queued[key] = (p, f or flag, seq)
            return
        seq = next(self._seq)
        self._queued[key] = (priority, flag, seq)
        heapq.heappush(self._ready, (priority, seq, key))
        self._cond.notify()

    # -- observability --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    def counts(self) -> tuple[int, int, int]:
        """Keys (ready to run, delayed, running): the depth the metrics report."""
        with self._cond:
            return len(self._queued), len(self._waiting), len(self._processing)

    def __len__(self) -> int:
        """Keys waiting to run now (not counting delayed or running ones)."""
        with self._cond:
            return len(self._queued)

    def waiting(self, priority: int) -> int:
        """Keys queued with this priority or a more urgent one."""
        with self._cond:
            return sum(1 for p, _, _ in self._queued.values() if p <= priority)

    # -- workers --------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking keys; running handlers finish (waited for up to ``timeout``)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        metrics.untrack_queue(self)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> tuple[K, int, bool] | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, seq, key = heapq.heappop(self._delayed)
                    waiting = self._waiting.get(key)
                    if waiting is not None and waiting[2] == seq:
                        del self._waiting[key]
                        self._add(key, waiting[0], waiting[1])
                while self._ready:
                    _, seq, key = heapq.heappop(self._ready)
                    current = self._queued.get(key)
                    if current is None or current[2] != seq:
                        continue  # superseded by a more urgent entry for the same key
                    del self._queued[key]
                    self._processing.add(key)
                    self._wait.observe(time.monotonic() - self._added.pop(key, now))
                    return key, current[0], current[1]
                self._cond.wait(self._delayed[0][0] - now if self._delayed else None)
            return None

    def _done(self, key: K, priority: int, flag: bool, ok: bool) -> None:
        with self._cond:
            self._processing.discard(key)
            again = self._again.pop(key, None)
            if again is not None:
                self._add(key, *again)
            if ok:
                self._failures.pop(key, None)
                return
            self._retries.inc()
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(self._max_delay, self._base_delay * 2 ** (failures - 1))
            self._add_after(key, delay, priority, flag)

    def _work(self) -> None:
        while (item := self._take()) is not None:
            key, priority, flag = item
            ok = False
            try:
                self._handler(key, flag)
                ok = True
            except ApiException as exc:  # transient: an outage, a conflict, a timeout
                log.warning("reconcile of %s failed: API error %s %s; retrying", key, exc.status, exc.reason)  # fmt: skip
            except Exception:
                log.exception("reconcile of %s failed; retrying", key)
            finally:
                self._done(key, priority, flag, ok)
