"""Glue: watch events become keys in the operator's work queue.

Deliberately thin; the work is in :mod:`snowtrain.operator.reconcile` (side effects) and the
pure children/status modules. On every replica the informers (:mod:`.informer`) watch the
jobs and their Jobs and pods, and kopf serves the liveness probe and the admission webhook
and watches the serving Deployments; the replica holding the leader Lease (:mod:`.leader`)
runs the reconciles, on the work queue's threads:

- a job that is new or whose spec changed (``metadata.generation`` differs from the
  ``status.observedGeneration`` we wrote) is reconciled first, so a newly applied job gets
  its Job within moments even when hundreds arrive at once;
- a job's batch Job finishing comes next (``Succeeded``/``Failed`` within a second);
- other events of its Jobs, pods and serving Deployment, then periodic resyncs: progress
  from the pod log every ``progress_refresh_seconds`` while Running (and a look at a
  referenced PretrainJob while Waiting), other undecided phases every
  ``IDLE_RECHECK_SECONDS``; jobs listed at startup are resumed the same way.

kopf's own create/update handlers are not used: they keep state in annotations and a
finalizer on every job, which costs two extra writes (and the watch events they cause) per
change; our status's observedGeneration already says whether a spec was handled, and
children are garbage-collected through their owner references.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client, config

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.kinds import GROUP, JOB_KINDS, VERSION, FineTuneJob, PretrainJob
from snowtrain.api.schedule import TrainingSchedule

from . import children as ch
from . import metrics
from .context import Context, Key, job_key
from .informer import Informer, child_informer, watched_lister
from .kube import Kube
from .leader import LeaderElector
from .reconcile import PLURALS, reconcile
from .schedule_children import LABEL_SCHEDULE
from .settings import OperatorSettings
from .webhook_tls import WebhookTls, WebhookTlsError
from .workqueue import WorkQueue

log = logging.getLogger("snowtrain.operator")

SETTINGS = OperatorSettings()
_CTX: Context | None = None
_QUEUE: WorkQueue[Key] | None = None
_LEADER: LeaderElector | None = None
DECIDED = ("Succeeded", "Failed")
ACTIVE = ("Running", "Waiting")
IDLE_RECHECK_SECONDS = 30.0
RESYNC_TICK_SECONDS = 1.0
ECHO_DELAY_SECONDS = 0.5
"""How long a child's non-terminal change waits for more (its Job's status, its pod's, a
moment apart) so they cost one reconcile; the status shows them this much later."""

# Work queue priorities: lower runs first.
NEW_OR_CHANGED = 0
CHILD_FINISHED = 1
CHILD_CHANGED = 2
RESYNC = 3


class _NoDiffBase(kopf.DiffBaseStorage):
    """No change-detecting handlers here, so no diff base: kopf would otherwise deep-copy
    every watched object (pods included) on every event to build one, which was a sixth of
    the operator's CPU with hundreds of jobs starting at once."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _load_kube_config() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    # One connection per worker thread (plus the event poster): urllib3 discards connections
    # beyond the pool size (default 5 x CPUs), and every request past it pays a new TLS
    # handshake, on our side and the API server's.
    configuration.connection_pool_maxsize = SETTINGS.max_workers + 4
    return metrics.instrument(client.ApiClient(configuration))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf settings (watch timeouts, peering, webhook); start the work queue and resync."""
    global _CTX, _QUEUE
    settings.persistence.diffbase_storage = _NoDiffBase()
    # Watches can stall silently; bounded server/client timeouts re-establish them (kopf's
    # here, the informers' from the same settings).
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.watching.connect_timeout = SETTINGS.watch_connect_timeout
    settings.posting.level = logging.WARNING
    # One leader through a Lease (below), not kopf peering: every replica watches.
    settings.peering.standalone = True
    settings.networking.request_timeout = 30
    api = _load_kube_config()
    if SETTINGS.webhook_enabled:
        from .webhook import configure_admission

        tls = configure_admission(settings, SETTINGS, api)
        if tls is not None:
            threading.Thread(
                target=_refresh_tls_forever, args=(tls,), name="webhook-tls", daemon=True
            ).start()
    kube = Kube(api)
    _CTX = Context(kube=kube, settings=SETTINGS, caps=kube.capabilities())
    # An invalid spec becomes Failed/InvalidSpec inside reconcile; API errors are retried
    # with backoff by the queue.
    _QUEUE = WorkQueue(_reconcile_key, SETTINGS.max_workers)
    _CTX.defer_status = _defer_status
    metrics.register_jobs_source(_CTX.known)
    metrics.register_leader_source(is_leader)
    if SETTINGS.metrics_port:
        metrics.start_server(SETTINGS.metrics_port)
    _QUEUE.start()
    threading.Thread(target=_resync_forever, name="resync", daemon=True).start()
    _start_informers(_CTX)
    _start_leader_election(api)
    log.info(
        "snowtrain operator started: Kubernetes %s.%s, Job.spec.suspend %s",
        _CTX.caps.major,
        _CTX.caps.minor,
        "yes" if _CTX.caps.job_suspend else "no (suspend deletes the attempt's Job)",
    )


def ctx() -> Context:
    assert _CTX is not None, "the startup handler has not run"
    return _CTX


def queue() -> WorkQueue[Key]:
    assert _QUEUE is not None, "the startup handler has not run"
    return _QUEUE


def _start_leader_election(api: client.ApiClient) -> None:
    """Campaign for the Lease (unless standalone: then this process always leads)."""
    global _LEADER
    if SETTINGS.standalone:
        return
    if not SETTINGS.pod_namespace:
        raise kopf.PermanentError("leader election needs SNOWTRAIN_POD_NAMESPACE")
    _LEADER = LeaderElector(
        api,
        SETTINGS.pod_namespace,
        SETTINGS.leader_lease_name,
        pod_name=SETTINGS.pod_name,
        on_started=_took_over,
    )
    _LEADER.start()


def is_leader() -> bool:
    return _LEADER is None or _LEADER.is_leader()


def _took_over() -> None:
    """Now the leader: look at every job this replica's watches know, new or changed
    first, without waiting for a re-list."""
    for key, body in ctx().known():
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        changed = status.get("observedGeneration") != meta.get("generation")
        queue().add(key, NEW_OR_CHANGED if changed else RESYNC, True)


def _refresh_tls_forever(tls: WebhookTls) -> None:
    """Pick up renewals (ours or another replica's, or cert-manager's) and renew when due."""
    while True:
        time.sleep(SETTINGS.webhook_tls_refresh_seconds)
        try:
            tls.sync()
        except (WebhookTlsError, OSError) as exc:
            log.warning("webhook certificate refresh failed: %s", exc)


_STEPPING_DOWN = threading.Lock()


def step_down() -> None:
    """Stop reconciling and hand the Lease over, while the webhook and the probes keep
    serving. Running reconciles finish first (each is short) and their Events are posted, so
    the next leader starts at once and never overlaps with this one.

    Kubernetes runs the pod's preStop hook before it sends SIGTERM; the chart's hook sends
    SIGUSR1, so a standby takes over while this pod is still draining its webhook traffic.
    """
    with _STEPPING_DOWN:
        if _QUEUE is not None:
            _QUEUE.stop()
        if _CTX is not None:
            _CTX.events.shutdown(wait=True)  # the Events of those reconciles' transitions
        if _LEADER is not None:
            _LEADER.release()


@kopf.on.startup()
async def step_down_on_sigusr1(**_: Any) -> None:
    """SIGUSR1 (the preStop hook) -> :func:`step_down`, off the event loop (it waits)."""
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1,
        lambda: threading.Thread(target=step_down, name="step-down", daemon=True).start(),
    )


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    """SIGTERM: step down (if the preStop hook has not already) before kopf exits."""
    step_down()


def _defer_status(key: Key) -> bool:
    """While other new jobs wait, write this new job's first status after their Jobs."""
    if queue().waiting(NEW_OR_CHANGED) == 0:
        return False
    queue().add(key, CHILD_FINISHED, True)  # runs again once the new jobs are through
    return True


def _reconcile_key(key: Key, force_logs: bool) -> None:
    if not is_leader():
        return  # a standby: the leader reconciles; _took_over() queues everything on takeover
    reconcile(ctx(), key, force_logs=force_logs)


def on_job_change(type: str | None, raw: dict[str, Any]) -> None:
    """A FineTuneJob/PretrainJob/BatchPrediction/TrainingSchedule was listed, added or
    changed (or deleted)."""
    key = job_key(raw)
    meta, status = raw.get("metadata") or {}, raw.get("status") or {}
    schedule = (meta.get("labels") or {}).get(LABEL_SCHEDULE)
    if schedule and raw.get("kind") in JOB_KINDS and type is not None:
        queue().add((TrainingSchedule.KIND, key[1], schedule), CHILD_CHANGED)  # a run moved
    if type == "DELETED" or meta.get("deletionTimestamp"):
        ctx().forget(key)
        queue().forget(key)
        return
    ctx().remember(raw)
    if status.get("observedGeneration") != meta.get("generation"):
        queue().add(key, NEW_OR_CHANGED, True)  # new, or its spec changed
    elif type is None:
        queue().add(key, RESYNC, True)  # listed at (re)start: resume it
    # Otherwise only status/metadata changed: our own write, or labels. Nothing to do.
    if raw.get("kind") in JOB_KINDS and status.get("phase") in DECIDED:
        # Whoever waits for this job's model: FineTuneJobs for a PretrainJob's, and
        # BatchPredictions for either's.
        waiters = {BatchPrediction.KIND}
        if raw.get("kind") == PretrainJob.KIND:
            waiters.add(FineTuneJob.KIND)
        for other, other_body in ctx().known():
            waiting = (other_body.get("status") or {}).get("phase") == "Waiting"
            if other[0] in waiters and other[1] == key[1] and waiting:
                queue().add(other, CHILD_CHANGED)


def _jobs_listed(kind: str, namespace: str | None) -> Callable[[list[dict[str, Any]], str], None]:
    """A complete list of one job kind: jobs known but not listed were deleted while no
    watch ran (no event will say so); the listed ones are resumed."""

    def listed(items: list[dict[str, Any]], version: str) -> None:
        present = {job_key(item) for item in items}
        for key, _ in ctx().known():
            if key[0] == kind and namespace in (None, key[1]) and key not in present:
                ctx().forget(key)
                queue().forget(key)
        for item in items:
            on_job_change(None, item)

    return listed


def _start_informers(context: Context) -> None:
    """List + watch the jobs, and the Jobs and pods they own (ours carry the job label,
    into the child index), on every replica: a standby that takes over is ready."""
    watch_timeout, request_timeout = SETTINGS.watch_server_timeout, SETTINGS.watch_client_timeout
    namespaces: list[str | None] = [*SETTINGS.namespace_list] or [None]
    for namespace in namespaces:
        for cls in (FineTuneJob, PretrainJob, BatchPrediction, TrainingSchedule):
            Informer(
                cls.KIND,
                *watched_lister(context.kube, cls.KIND, namespace),
                _jobs_listed(cls.KIND, namespace),
                on_job_change,
                api_version=f"{GROUP}/{VERSION}",
                where=namespace or "all namespaces",
                watch_timeout_seconds=watch_timeout,
                request_timeout_seconds=request_timeout,
            ).start()
        for kind in context.children.KINDS:
            child_informer(
                context.kube, kind, namespace, context.children, on_child_change,
                watch_timeout_seconds=watch_timeout, request_timeout_seconds=request_timeout,
            ).start()  # fmt: skip


async def on_deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A serving Deployment changed (kopf's watch)."""
    on_child_change(type, body)


def on_child_change(type: str | None, body: Any) -> None:
    """A child changed (the index has it already): queue its owner, found from the child's
    labels. Called on the informers' threads and kopf's loop; the queue is thread-safe."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    kind = labels.get(ch.LABEL_KIND)
    name = labels.get(ch.LABEL_JOB) or labels.get(ch.LABEL_SERVING)
    if kind not in PLURALS or not name or type is None:
        return
    if type == "ADDED" or (body.get("kind") == "Pod" and type == "DELETED"):
        # We created it (the creating reconcile saw it); a new pod also shows in its Job's
        # status, and a deleted pod is garbage collection.
        return
    terminal = body.get("kind") == "Job" and any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )
    key = (kind, str(meta.get("namespace")), name)
    if terminal:
        queue().add(key, CHILD_FINISHED, True)
    else:
        queue().add_after(key, ECHO_DELAY_SECONDS, CHILD_CHANGED)


def _resync_forever() -> None:
    """Queue undecided jobs that are due a look: progress from the pod log while Running,
    the referenced PretrainJob while Waiting; otherwise when the last reconcile said a look
    could change something (a stuck pod's timeout, Events of a Job without pods, a serving
    Deployment short of ready pods, for decided jobs too)."""
    while True:
        time.sleep(RESYNC_TICK_SECONDS)
        if not is_leader():
            continue
        now = time.monotonic()
        for key, body in ctx().known():
            phase = (body.get("status") or {}).get("phase")
            if phase in DECIDED and key not in ctx().serving_short:
                continue
            last = ctx().last_reconciled.get(key)
            if last is None:
                continue
            if phase in ACTIVE:
                due = last + SETTINGS.progress_refresh_seconds
            else:  # only a deadline (a stuck pod's timeout) or Events change these
                due = ctx().due.get(key, last + IDLE_RECHECK_SECONDS)
            if now >= due:
                queue().add(key, RESYNC)


# The jobs, their Jobs and pods are watched by the informers (:mod:`.informer`), not kopf.
kopf.on.event("apps", "v1", "deployments", labels={ch.LABEL_SERVING: kopf.PRESENT})(on_deployment_event)  # fmt: skip
