"""The operator's own view of its children (batch Jobs and pods), kept from its watches.

Why: a reconcile used to list its job's Jobs and pods by label. Even served from the API
server's watch cache, a label-selected list makes the API server filter every Job (or pod)
of the namespace, so with N jobs each reconcile costs O(N) there, and the operator decodes
the answer; N jobs reconciling a few times each made both quadratic in N. The operator
watches those children anyway (every change queues a reconcile), so it keeps what the watch
delivers here, by owning job, and a reconcile reads its children in O(1). This is what
client-go's informers give controllers written in Go.

How it stays true:

- **List, then watch** (:mod:`snowtrain.operator.informer`): a kind's view is replaced by
  each list (an object deleted while no watch ran is dropped), then watch events update
  entries (newer ``resourceVersion`` wins). The informer updates the index *before* it
  queues the reconcile, so a reconcile triggered by a change sees at least that change.
- **Our own creates are written through** (the object the API answered), so a reconcile
  right after a create never misses the Job it just made, whatever its watch event does.
- **Until a namespace's first list is in**, the index does not answer for it and reconciles
  list as before. A deletion the watch reported is remembered (a tombstone), so a reconcile's
  list from a lagging cache does not bring the object back.
- Callers fall back to a real list where absence would decide something: the job's status
  names an attempt whose Job the index lacks, or a Job says it has pods the index lacks.

Only what reconciles read is kept (names, labels, owners, times, ``spec.suspend`` and
``spec.parallelism``, and the status): a pod's full spec would cost the operator's memory
more than the whole rest of its state at a thousand jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from . import children as ch

Owner = tuple[str, str, str]
"""(kind, namespace, name) of the FineTuneJob/PretrainJob a child belongs to."""

TOMBSTONE_SECONDS = 600.0
"""How long a deletion the watch reported keeps the object out of (lagging) lists."""

_META_KEPT = (
    "name",
    "namespace",
    "uid",
    "labels",
    "ownerReferences",
    "creationTimestamp",
    "deletionTimestamp",
    "resourceVersion",
)
_SPEC_KEPT = ("suspend", "parallelism")


def trimmed(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Job or pod that reconciles read (shared, not copied)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    out: dict[str, Any] = {
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _META_KEPT if k in meta},
        "status": body.get("status") or {},
    }
    kept_spec = {k: spec[k] for k in _SPEC_KEPT if k in spec}
    if kept_spec:
        out["spec"] = kept_spec
    return out


def owner_of(body: dict[str, Any]) -> Owner | None:
    """The job a child belongs to, from the labels the operator puts on everything it makes."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    kind, name = labels.get(ch.LABEL_KIND), labels.get(ch.LABEL_JOB)
    if not kind or not name or not meta.get("namespace"):
        return None
    return (str(kind), str(meta["namespace"]), str(name))


def _rv(body: dict[str, Any]) -> int | None:
    rv = (body.get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def _newer_or_same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    new_rv, old_rv = _rv(new), _rv(old)
    return new_rv is None or old_rv is None or new_rv >= old_rv


class ChildIndex:
    """Jobs and pods by owning job; thread-safe (watch events on kopf's loop, reads on the
    reconcile threads, sweeps on their own)."""

    KINDS = ("Job", "Pod")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[tuple[str, Owner], dict[str, dict[str, Any]]] = {}
        self._where: dict[str, tuple[str, Owner]] = {}  # uid -> (child kind, owner)
        self._tombstones: dict[str, float] = {}  # uid -> when its deletion was seen
        self._pruned = time.monotonic()
        self._listed: set[tuple[str, str | None]] = set()  # (kind, namespace; None: all)

    # -- updates --------------------------------------------------------------------------
    def observe(self, body: dict[str, Any], *, deleted: bool = False) -> None:
        """A watch event (or an object the API answered us) for a Job or pod."""
        kind = body.get("kind")
        uid = (body.get("metadata") or {}).get("uid")
        if kind not in self.KINDS or not uid:
            return
        with self._lock:
            if deleted:
                now = time.monotonic()
                self._tombstones[uid] = now
                self._drop(uid)
                if now - self._pruned >= TOMBSTONE_SECONDS / 10:
                    self._prune_tombstones(now)
            elif uid not in self._tombstones:
                self._upsert(str(kind), uid, body)

    def put_all(self, items: Iterable[dict[str, Any]]) -> None:
        """Objects the API answered (a create's, a fallback list's): newer ones win."""
        for item in items:
            self.observe(item)

    def replace(
        self, kind: str, namespace: str | None, items: list[dict[str, Any]], list_rv: str
    ) -> None:
        """A full list of the namespace's children of ``kind`` (None: every namespace's) at
        ``list_rv``: add what is new, drop what the list no longer has unless it changed
        after the list (a create written through)."""
        listed_rv = int(list_rv) if list_rv.isdigit() else None
        now = time.monotonic()
        with self._lock:
            seen: set[str] = set()
            for item in items:
                uid = (item.get("metadata") or {}).get("uid")
                if not uid or uid in self._tombstones:
                    continue
                seen.add(uid)
                self._upsert(kind, uid, {**item, "kind": kind})
            for uid, (child_kind, owner) in list(self._where.items()):
                if child_kind != kind or namespace not in (None, owner[1]) or uid in seen:
                    continue
                entry_rv = _rv(self._by_owner[(child_kind, owner)][uid])
                if listed_rv is None or entry_rv is None or entry_rv <= listed_rv:
                    self._drop(uid)
            self._prune_tombstones(now)
            self._listed.add((kind, namespace))

    def _prune_tombstones(self, now: float) -> None:
        """Forget deletions older than TOMBSTONE_SECONDS (no list lags that much), so a
        long-running operator does not keep one per object it ever saw deleted."""
        self._pruned = now
        for uid, when in list(self._tombstones.items()):
            if now - when > TOMBSTONE_SECONDS:
                del self._tombstones[uid]

    def _upsert(self, kind: str, uid: str, body: dict[str, Any]) -> None:
        owner = owner_of(body)
        if owner is None:
            return
        where = (kind, owner)
        entries = self._by_owner.setdefault(where, {})
        old = entries.get(uid)
        if old is None or _newer_or_same(body, old):
            entries[uid] = trimmed({**body, "kind": kind})
            self._where[uid] = where

    def _drop(self, uid: str) -> None:
        where = self._where.pop(uid, None)
        if where is None:
            return
        entries = self._by_owner.get(where)
        if entries is not None:
            entries.pop(uid, None)
            if not entries:
                del self._by_owner[where]

    # -- reads ----------------------------------------------------------------------------
    def primed(self, kind: str, namespace: str) -> bool:
        """The namespace's children of ``kind`` have been listed once (what the index says
        is complete from then on)."""
        with self._lock:
            return self._primed(kind, namespace)

    def _primed(self, kind: str, namespace: str) -> bool:
        return (kind, namespace) in self._listed or (kind, None) in self._listed

    def children(
        self, kind: str, owner: Owner, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]] | None:
        """The owner's children of ``kind`` matching ``labels``; None while the namespace
        is not primed (the caller lists instead)."""
        with self._lock:
            if not self._primed(kind, owner[1]):
                return None
            entries = list(self._by_owner.get((kind, owner), {}).values())
        if labels:
            entries = [
                e
                for e in entries
                if all(e["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())
            ]
        return entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._where)
