"""kopf glue: which events trigger a reconcile. Deliberately thin; the work is in
:mod:`snowtrain.operator.reconcile` (side effects) and the pure children/status modules.

- create/resume/update of a FineTuneJob or PretrainJob reconcile it at once;
- events of its batch Jobs, training pods and serving Deployment reconcile the owner, so a
  finished Job becomes ``Succeeded`` within a second instead of at the next timer tick;
- a timer per job refreshes progress from the pod log every ``progress_refresh_seconds``
  while it is not decided (and notices a referenced PretrainJob finishing).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from snowtrain.api.kinds import GROUP, VERSION, FineTuneJob, PretrainJob

from . import children as ch
from .reconcile import PLURALS, Context, Kube, reconcile
from .settings import OperatorSettings

log = logging.getLogger("snowtrain.operator")

SETTINGS = OperatorSettings()
_CTX: Context | None = None
DECIDED = ("Succeeded", "Failed")
ACTIVE = ("Running", "Waiting")
IDLE_RECHECK_SECONDS = 30.0


def _load_kube_config() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf settings: progress in annotations (status is ours), watch timeouts, workers."""
    global _CTX
    prefix = "kopf.snowtrain.io"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    # kopf watches can stall silently; bounded server/client timeouts re-establish them.
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.watching.connect_timeout = SETTINGS.watch_connect_timeout
    settings.execution.max_workers = SETTINGS.max_workers
    settings.posting.level = logging.WARNING
    settings.peering.name = SETTINGS.peering_name
    settings.peering.priority = SETTINGS.peering_priority
    settings.peering.mandatory = False
    if SETTINGS.standalone:
        settings.peering.standalone = True
    # An invalid spec becomes Failed/InvalidSpec inside reconcile; other errors are transient.
    settings.networking.request_timeout = 30
    if SETTINGS.webhook_enabled:
        from .webhook import configure_admission

        configure_admission(settings, SETTINGS)
    kube = Kube(_load_kube_config())
    _CTX = Context(kube=kube, settings=SETTINGS, caps=kube.capabilities())
    log.info(
        "snowtrain operator started: Kubernetes %s.%s, Job.spec.suspend %s, Indexed Jobs %s",
        _CTX.caps.major,
        _CTX.caps.minor,
        "yes" if _CTX.caps.job_suspend else "no (suspend deletes the attempt's Job)",
        "yes" if _CTX.caps.indexed_jobs else "no (multi-node jobs are refused)",
    )


def ctx() -> Context:
    assert _CTX is not None, "the startup handler has not run"
    return _CTX


def _run(body: Any, force_logs: bool = False) -> None:
    try:
        reconcile(ctx(), dict(body), force_logs=force_logs)
    except ApiException as exc:
        raise kopf.TemporaryError(
            f"Kubernetes API error {exc.status} {exc.reason}", delay=5
        ) from None


for _kind in (FineTuneJob, PretrainJob):
    _plural = _kind.PLURAL

    @kopf.on.resume(GROUP, VERSION, _plural, id="resume")
    @kopf.on.create(GROUP, VERSION, _plural, id="create")
    @kopf.on.update(GROUP, VERSION, _plural, id="update")
    def on_change(body: kopf.Body, **_: Any) -> None:
        """Any spec change (and startup, and creation) reconciles at once."""
        _run(body, force_logs=True)

    @kopf.timer(GROUP, VERSION, _plural, interval=SETTINGS.progress_refresh_seconds,
                initial_delay=SETTINGS.progress_refresh_seconds)  # fmt: skip
    def refresh(body: kopf.Body, status: kopf.Status, meta: kopf.Meta, **_: Any) -> None:
        """Progress from the pod log while Running, and a look at the referenced PretrainJob
        while Waiting. Other phases change through their children's events; they are
        re-checked only every IDLE_RECHECK_SECONDS (an Unschedulable pod's timeout). Decided
        jobs need nothing."""
        phase = status.get("phase")
        if phase in DECIDED:
            return
        key = (body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        last = ctx().last_reconciled.get(key, 0.0)
        if phase not in ACTIVE and time.monotonic() - last < IDLE_RECHECK_SECONDS:
            return
        _run(body)


def _owner_changed(body: kopf.Body, meta: kopf.Meta, type: str | None, **_: Any) -> None:
    """A child changed: reconcile its owner (found from the child's labels)."""
    labels = meta.get("labels") or {}
    kind = labels.get(ch.LABEL_KIND)
    name = labels.get(ch.LABEL_JOB) or labels.get(ch.LABEL_SERVING)
    if kind not in PLURALS or not name or type is None:
        return
    if type == "ADDED" or (body.get("kind") == "Pod" and type == "DELETED"):
        # We created it (the creating reconcile saw it); a new pod also shows in its Job's
        # status, and a deleted pod is garbage collection. Skipping these halves the work
        # when hundreds of jobs start at once.
        return
    owner = {"kind": kind, "apiVersion": f"{GROUP}/{VERSION}",
             "metadata": {"name": name, "namespace": meta.get("namespace")}}  # fmt: skip
    terminal = body.get("kind") == "Job" and any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )
    try:
        reconcile(ctx(), owner, force_logs=terminal)
    except ApiException as exc:
        log.warning("reconcile of %s %s after a child event failed: %s", kind, name, exc.reason)


kopf.on.event("batch", "v1", "jobs", labels={ch.LABEL_JOB: kopf.PRESENT})(_owner_changed)
kopf.on.event("", "v1", "pods", labels={ch.LABEL_JOB: kopf.PRESENT})(_owner_changed)
kopf.on.event("apps", "v1", "deployments", labels={ch.LABEL_SERVING: kopf.PRESENT})(_owner_changed)
