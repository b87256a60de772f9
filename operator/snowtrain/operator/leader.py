"""Leader election over a ``coordination.k8s.io/v1`` Lease: exactly one replica reconciles.

Why a Lease and not kopf peering: it is the primitive every Kubernetes controller uses
(kube-controller-manager, controller-runtime), needs no cluster-wide CRD, is readable with
``kubectl get lease``, and lets standby replicas keep watching. Every replica runs kopf's
watches, keeps its job cache warm and serves the admission webhook and the probes; only the
holder of the Lease runs reconciles. A replica that takes over queues every job it knows at
once, so nothing waits for a re-list.

The election loop is the Kubernetes client's own (``kubernetes.leaderelection``). Two things
are added around it:

- ``release()`` on shutdown, as client-go's ``ReleaseOnCancel``: a leader whose pod is deleted
  hands the Lease over at once instead of letting the standby wait out the lease duration;
- a leader that fails to renew in time stops reconciling and asks the process to exit (the
  pod restarts as a follower), so two replicas never act as leader beyond the renew deadline.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger("snowtrain.operator.leader")

LEASE_DURATION_SECONDS = 15
"""A standby waits this long after the last renewal before taking a Lease over (a leader
that crashed without releasing it)."""
RENEW_DEADLINE_SECONDS = 10
"""A leader that could not renew for this long steps down."""
RETRY_PERIOD_SECONDS = 2
"""How often a leader renews and a standby tries to acquire."""


def identity_for(pod_name: str | None) -> str:
    """The pod's name (unique among replicas; the host's name outside a pod), with a random
    suffix so a restarted process never mistakes its predecessor's Lease for its own."""
    return f"{pod_name or os.uname().nodename}_{uuid.uuid4().hex[:8]}"


class _Election(leaderelection.LeaderElection):
    """The client's election loop, refusing to (re)acquire once we are shutting down."""

    def __init__(self, config: electionconfig.Config, stopping: threading.Event) -> None:
        super().__init__(config)  # type: ignore[no-untyped-call]
        self._stopping = stopping

    def try_acquire_or_renew(self) -> bool:
        if self._stopping.is_set():
            return False
        return bool(super().try_acquire_or_renew())  # type: ignore[no-untyped-call]


class LeaderElector:
    """Campaigns for a Lease in a background thread; ``is_leader()`` gates the reconciles."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        *,
        pod_name: str | None = None,
        on_started: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM),
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity_for(pod_name)
        self._leading = threading.Event()
        self._stopping = threading.Event()
        self._on_started = on_started
        self._on_lost = on_lost
        self._coordination = client.CoordinationV1Api(api)
        lock = LeaseLock(name, namespace, self.identity)  # type: ignore[no-untyped-call]
        lock.api_instance = self._coordination  # our client, not the global default
        self._election = _Election(
            electionconfig.Config(  # type: ignore[no-untyped-call]
                lock,
                LEASE_DURATION_SECONDS,
                RENEW_DEADLINE_SECONDS,
                RETRY_PERIOD_SECONDS,
                self._started,
                self._stopped,
            ),
            self._stopping,
        )
        # The client logs every retry at INFO (a standby: every 2 s).
        logging.getLogger("leaderelection").setLevel(logging.WARNING)

    def start(self) -> None:
        threading.Thread(target=self._election.run, name="leader-election", daemon=True).start()

    def is_leader(self) -> bool:
        return self._leading.is_set()

    def _started(self) -> None:
        log.info("acquired Lease %s/%s as %s", self.namespace, self.name, self.identity)
        self._leading.set()
        self._on_started()

    def _stopped(self) -> None:
        was_leading = self._leading.is_set()
        self._leading.clear()
        if self._stopping.is_set() or not was_leading:
            return
        # Another replica may hold the Lease by now: stop acting (by default: the process
        # exits and its pod restarts as a follower).
        log.error("lost Lease %s/%s (renewal failed)", self.namespace, self.name)
        self._on_lost()

    def release(self) -> bool:
        """Give the Lease up on shutdown so a standby takes over within a retry period.

        Returns True when this replica held it and released it.
        """
        self._stopping.set()
        if not self._leading.is_set():
            return False
        self._leading.clear()
        try:
            lease = self._coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return False
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = datetime.datetime.now(datetime.UTC)
            self._coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc.reason)
            return False
        log.info("released Lease %s/%s", self.namespace, self.name)
        return True
