"""One reconcile of one job: observe, decide with the pure core, apply (the side effects).

Level-based and idempotent: children are found by label before anything is created, names
are deterministic (a second create answers 409 and is ignored), and status is recomputed from
what is observed. Killing the operator at any point and re-running this converges to the
same children, never duplicates. The calls are blocking (kubernetes client); the operator's
work queue (:mod:`snowtrain.operator.workqueue`) runs them on its threads, one reconcile per
job at a time.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.events import now_iso
from snowtrain.api.kinds import GROUP, VERSION, AnyJob, FineTuneJob
from snowtrain.api.schedule import TrainingSchedule
from snowtrain.api.status import FailureReason as R
from snowtrain.api.status import Phase
from snowtrain.api.torchrun import RENDEZVOUS_PORT
from snowtrain.api.validation import RESOURCE_KINDS, InvalidJob

from . import attempts, metrics, trainer_log
from . import children as ch
from . import status as st
from .context import Context, Key, job_key
from .kube import (
    ChildRefused,
    create_child,
    delete_child,
    get_or_none,
    list_children,
    merge_patch,
    owned_by,
    raw,
    send,
)
from .policy import policy_errors
from .prediction_status import PredictionOutcome
from .server_pods import first_crash, server_pods

log = logging.getLogger("snowtrain.operator")

PLURALS = {kind: cls.PLURAL for kind, cls in RESOURCE_KINDS.items()}


def _component(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(ch.LABEL_COMPONENT)


def _attempt_of(job: dict[str, Any]) -> int:
    try:
        return int((job.get("metadata") or {}).get("labels", {}).get(ch.LABEL_ATTEMPT, 0))
    except ValueError:
        return 0


def reconcile(
    ctx: Context, key: Key, *, force_logs: bool = False
) -> st.Outcome | PredictionOutcome | str | None:
    """Reconcile the FineTuneJob/PretrainJob/BatchPrediction ``key``; None when it is gone
    or being deleted.

    The caller (the work queue) runs one reconcile per key at a time. The job itself comes
    from the context (kept current by watch events and our own writes); only a job not seen
    yet is read from the API server. Its duration is recorded by kind and outcome.
    """
    started, outcome = time.perf_counter(), "error"
    try:
        result = _reconcile_key(ctx, key, force_logs=force_logs)
        outcome = "ok" if result is not None else "gone"
        return result
    finally:
        metrics.RECONCILE_DURATION.labels(key[0], outcome).observe(time.perf_counter() - started)


def _reconcile_key(
    ctx: Context, key: Key, *, force_logs: bool
) -> st.Outcome | PredictionOutcome | str | None:
    ctx.last_reconciled[key] = time.monotonic()
    with ctx.guard:
        body = ctx.jobs.get(key)
    if body is None:
        body = get_or_none(
            ctx.kube.custom.get_namespaced_custom_object,
            GROUP, VERSION, key[1], PLURALS[key[0]], key[2],
        )  # fmt: skip
        if body is None:
            ctx.forget(key)
            return None
        ctx.remember(body)
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    try:
        if key[0] == BatchPrediction.KIND:
            # Imported here: the BatchPrediction reconcile uses this module's helpers.
            from .prediction import reconcile_prediction

            return reconcile_prediction(ctx, body, force_logs=force_logs)
        if key[0] == TrainingSchedule.KIND:
            from .schedule import reconcile_schedule

            return reconcile_schedule(ctx, body, force_logs=force_logs)
        return _reconcile(ctx, body, force_logs=force_logs)
    except ApiException as exc:
        if exc.status != 404:
            raise
        # Something this reconcile read or wrote is gone; most often the job itself, deleted
        # while we worked (our status write's answer may even have put it back in the
        # cache after its DELETED event). Drop the cached copy: the next look reads afresh.
        ctx.forget(key)
        return None


def _reconcile(ctx: Context, body: dict[str, Any], *, force_logs: bool) -> st.Outcome:
    """Observe -> decide -> act -> write the status.

    The first attempt is created while observing (a new job's only useful observation is
    its own Job). Decisions come from the pure core (:func:`status.compute`); an action that
    changes what was observed (a new attempt started, a serving child refused) is decided
    again before the status is written, so the status never describes the world before it.
    """
    meta = body["metadata"]
    obs, job, pretrain_uri = _observe_spec(ctx, body)
    found = _observe_jobs(ctx, body, obs)
    can_run = job is not None and _may_run(obs)
    first = obs.attempt == 0 and job is not None and (not job.spec.suspend or ctx.caps.job_suspend)
    if can_run and first and job is not None:
        try:
            found.by_attempt[1] = _start_attempt(ctx, job, 1, pretrain_uri, found.by_attempt)
        except ChildRefused as exc:
            obs.child_refused = (exc.reason, exc.message)
            can_run = False
        else:
            obs.attempt = 1
            ctx.started.add(job_key(body))
            if not obs.old_status and ctx.defer_status(job_key(body)):
                return st.Outcome(obs.old_block)
    current = found.by_attempt.get(obs.attempt)
    if current is not None and job is not None and can_run:
        current = _apply_suspend(ctx, job, current)
    _observe_attempt(ctx, body, obs, current, force_logs=force_logs)
    _observe_serving(ctx, body, obs)

    outcome = st.compute(obs)

    if outcome.start_next_attempt and job is not None and can_run and not found.deleting:
        _confirm_alive(ctx, body)
        _start_next_attempt(ctx, job, obs, pretrain_uri, found.by_attempt)
        outcome = st.compute(obs)
    if outcome.stop_current and current is not None:
        # Decided as failed: stop the Job from retrying pods that would fail the same way.
        raw(
            ctx.kube.batch.patch_namespaced_job,
            current["metadata"]["name"],
            meta["namespace"],
            {"spec": {"parallelism": 0}},
        )
    if found.stores:
        running = obs.current is not None and obs.current.state not in (
            "succeeded",
            "failed",
            "gone",
        )
        _retire_rendezvous(ctx, meta["namespace"], found.stores, obs.attempt if running else None)
    if job is not None and not obs.serving_refused:
        try:
            _reconcile_serving(ctx, job, outcome, obs, meta.get("uid"))
        except ChildRefused as exc:
            obs.serving_refused = (exc.reason, exc.message)
            outcome = st.compute(obs)
    _write_status(ctx, body, outcome)
    job_created = ((current or {}).get("metadata") or {}).get("creationTimestamp")
    recheck = st.recheck_after(obs, job_created, NO_POD_GRACE_SECONDS)
    ctx.due[job_key(body)] = time.monotonic() + recheck
    if obs.serving_pending:
        ctx.serving_short.add(job_key(body))
    else:
        ctx.serving_short.discard(job_key(body))
    return outcome


def _observe_spec(
    ctx: Context, body: dict[str, Any]
) -> tuple[st.Observed, AnyJob | None, str | None]:
    """What the spec says: valid and allowed (else why not), what it asks of serving, what
    it waits for (a PretrainJob's model: its URI once there), and whether this cluster can
    run it. The job is None when it must not run at all."""
    settings = ctx.settings
    meta = body["metadata"]
    name = meta["name"]
    obs = st.Observed(
        generation=int(meta.get("generation") or 1),
        old_status=body.get("status") or {},
        now=datetime.now(UTC),
        stuck_timeout_seconds=settings.stuck_timeout_seconds,
        max_attempts=settings.max_attempts,
    )
    job: AnyJob | None = None
    try:
        # Status is ours and may hold fields of a newer operator: validate the spec only.
        job = ctx.parsed(job_key(body), body)
    except InvalidJob as exc:
        obs.invalid = f"invalid spec: {exc}"
    else:
        # Where no webhook runs (or the job predates the policy): refused here instead.
        denied = policy_errors(job, settings)
        if denied:
            obs.invalid = "not allowed: " + "; ".join(str(e) for e in denied)
            job = None
    pretrain_uri: str | None = None
    if job is not None:
        obs.suspend = job.spec.suspend
        serving = job.spec.serving
        obs.serving_wanted = bool(serving and serving.enabled)
        obs.promotion = job.spec.promotion
        obs.serving_replicas = serving.replicas if serving else 0
        obs.output_uri = ch.output_location(job).uri
        obs.serving_names = (ch.serving_name(name), ch.serving_name(name))
        obs.endpoint = ch.serving_endpoint(job) if serving else None
        if isinstance(job, FineTuneJob) and job.spec.base_model.pretrain_job_ref:
            obs.waits_for_base = True
            pretrain_uri = _resolve_pretrain(ctx, job, obs)
    return obs, job, pretrain_uri


@dataclass
class _FoundJobs:
    """The job's own batch Jobs, by attempt."""

    by_attempt: dict[int, dict[str, Any]]
    deleting: bool
    """One of them is being deleted (a suspend on a cluster without Job.spec.suspend)."""
    stores: dict[int, dict[str, Any]]
    """Multi-node attempts' rendezvous store Jobs, by attempt."""


def _observe_jobs(ctx: Context, body: dict[str, Any], obs: st.Observed) -> _FoundJobs:
    """The attempts so far: the Jobs this job owns, the attempt count and first start."""
    old_status = obs.old_status
    # A job we never wrote a status for gets its first attempt without a look for Jobs:
    # the first reconcile of every job applied in a burst saves a request, and the Job
    # create answers 409 if a reconcile before a crash made it (then it is read).
    listed = bool(old_status) or job_key(body) in ctx.started
    recorded = int((old_status.get("job") or {}).get("attempts") or 0)
    jobs = _owned_jobs(ctx, body, recorded) if listed else []
    stores = {_attempt_of(j): j for j in jobs if _component(j) == ch.COMPONENT_RENDEZVOUS}
    jobs = [j for j in jobs if _component(j) != ch.COMPONENT_RENDEZVOUS]
    by_attempt = {_attempt_of(j): j for j in jobs}
    obs.attempt = max([recorded, *by_attempt])
    starts = [j["status"]["startTime"] for j in jobs if (j.get("status") or {}).get("startTime")]
    obs.first_start_time = (old_status.get("job") or {}).get("startTime") or (
        min(starts) if starts else None
    )
    if obs.attempt > 0 and (obs.base_waiting or obs.base_failed):
        # Training started from the base model already; a later change to the referenced
        # PretrainJob (deleted, retried) does not concern this job any more.
        obs.base_waiting = obs.base_failed = None
    deleting = any((j.get("metadata") or {}).get("deletionTimestamp") for j in jobs)
    return _FoundJobs(by_attempt, deleting, stores)


def _owned_jobs(ctx: Context, body: dict[str, Any], recorded: int) -> list[dict[str, Any]]:
    """The job's batch Jobs (trainer attempts and rendezvous stores): from the child index,
    or listed when the index cannot answer or lacks the attempt the status records."""
    meta = body["metadata"]
    owner = job_key(body)
    jobs = ctx.children.children("Job", owner)
    if jobs is None or (recorded and not any(
        _attempt_of(j) == recorded and _component(j) != ch.COMPONENT_RENDEZVOUS for j in jobs
    )):  # fmt: skip
        labels = {ch.LABEL_JOB: owner[2], ch.LABEL_KIND: owner[0]}
        jobs = list_children(ctx.kube.batch.list_namespaced_job, owner[1], labels)
        ctx.children.put_all({**j, "kind": "Job"} for j in jobs)
    return [j for j in jobs if owned_by(j, meta.get("uid"))]  # a label is no proof of owner


def _attempt_pods(ctx: Context, owner: Key, attempt: int) -> list[dict[str, Any]]:
    """The attempt's trainer pods (the Job says it has some): from the child index, or
    listed when the index cannot answer or has none of them yet."""
    labels = {
        ch.LABEL_JOB: owner[2],
        ch.LABEL_KIND: owner[0],
        ch.LABEL_ATTEMPT: str(attempt),
        ch.LABEL_COMPONENT: ch.COMPONENT_TRAINER,
    }
    pods = ctx.children.children("Pod", owner, labels)
    if not pods:
        pods = list_children(ctx.kube.core.list_namespaced_pod, owner[1], labels)
        ctx.children.put_all({**p, "kind": "Pod"} for p in pods)
    return pods


def _may_run(obs: st.Observed) -> bool:
    """Nothing stands in the way of (another) attempt: not decided, supported, and not
    waiting for or failed by its base model."""
    decided = obs.old_status.get("phase") in st.TERMINAL_PHASES and not obs.invalid
    return not (decided or obs.base_waiting or obs.base_failed)


def _observe_attempt(
    ctx: Context,
    body: dict[str, Any],
    obs: st.Observed,
    current: dict[str, Any] | None,
    *,
    force_logs: bool,
) -> None:
    """The current attempt's state: its pods (and the trainer's progress lines), or -- while
    it has none for a while -- the Job controller's Events saying why (quota, Pod Security)."""
    meta = body["metadata"]
    ns, name, kind = meta["namespace"], meta["name"], body["kind"]
    pods: list[dict[str, Any]] = []
    jstat = (current or {}).get("status") or {}
    has_pods = any(jstat.get(k) for k in ("active", "succeeded", "failed"))
    job_events: list[dict[str, Any]] | None = None
    if current is not None:
        obs.job_name = current["metadata"]["name"]
    if current is not None and not has_pods:
        if waiting_for_pods(current, obs.now):
            job_events = ctx.failed_creates.of(ns, current["metadata"]["name"])
    elif current is not None and not (current.get("metadata") or {}).get("deletionTimestamp"):
        pods = _attempt_pods(ctx, (kind, ns, name), obs.attempt)
        obs.report = read_progress(ctx, (kind, ns, name), pods, force_logs)
    obs.current = attempts.observe_attempt(
        current, pods, user_suspended=obs.suspend, job_events=job_events
    )


def _observe_serving(ctx: Context, body: dict[str, Any], obs: st.Observed) -> None:
    """The serving Deployment, when serving is wanted: only this job's counts."""
    if not obs.serving_wanted:
        return
    meta = body["metadata"]
    name = ch.serving_name(meta["name"])
    obs.deployment = get_or_none(
        raw, ctx.kube.apps.read_namespaced_deployment, name, meta["namespace"]
    )
    if obs.deployment is not None and not owned_by(obs.deployment, meta.get("uid")):
        obs.deployment = None
        obs.serving_refused = (
            R.CONFLICT,
            f"Deployment {name} already exists and is not this job's; "
            "it is left alone (rename the job or remove that Deployment)",
        )
    elif obs.serving_pending:
        # Not all ready: say why when a server exited (its pods' statuses), not only "0/1".
        obs.serving_crash = first_crash(server_pods(ctx, obs.deployment))


def _confirm_alive(ctx: Context, body: dict[str, Any]) -> None:
    """Read the job itself (a quorum read) before it gets another attempt: when a job is
    deleted, the garbage collector removes its Job, whose DELETED event can reach us before
    the job's own; from the cached job that would look like an attempt to replace. Raises
    a 404 ApiException (the caller forgets the job) when it is gone or was re-created."""
    meta = body["metadata"]
    live = raw(
        ctx.kube.custom.get_namespaced_custom_object,
        GROUP, VERSION, meta["namespace"], PLURALS[body["kind"]], meta["name"],
    )  # fmt: skip
    live_meta = live.get("metadata") or {}
    if live_meta.get("uid") != meta.get("uid") or live_meta.get("deletionTimestamp"):
        raise ApiException(status=404, reason=f"{body['kind']} {meta['name']} was deleted")


def _start_next_attempt(
    ctx: Context,
    job: AnyJob,
    obs: st.Observed,
    pretrain_uri: str | None,
    by_attempt: dict[int, dict[str, Any]],
) -> None:
    """Start attempt ``obs.attempt + 1`` (it resumes from the last checkpoint) and observe
    it as just created; a refused child is observed instead."""
    try:
        _start_attempt(ctx, job, obs.attempt + 1, pretrain_uri, by_attempt)
    except ChildRefused as exc:
        obs.child_refused = (exc.reason, exc.message)
        return
    obs.attempt += 1
    obs.job_name = ch.job_name(job.metadata.name or "", obs.attempt)
    obs.current = attempts.AttemptState("queued", "Created", "the training Job was created")
    obs.report = None


def _write_status(ctx: Context, body: dict[str, Any], outcome: st.Outcome) -> None:
    """Patch what changed in the status (nothing: no request) and announce a new phase."""
    old_status = body.get("status") or {}
    patch_status(ctx, body, outcome.status)
    if outcome.phase != old_status.get("phase"):
        failure = outcome.status.get("failure") or {}
        running: dict[str, Any] = next(
            (c for c in outcome.status.get("conditions", []) if c["type"] == "Running"), {}
        )
        emit_event(
            ctx,
            body,
            old_status.get("phase"),
            outcome.phase,
            str(failure.get("reason") or outcome.phase),
            failure.get("message") or running.get("message") or "",
        )
    gate = outcome.status.get("promotion") or {}
    if gate.get("reason") and gate != (old_status.get("promotion") or {}):
        # The evaluation gate decided (once per run): say so where `kubectl describe` looks.
        emit_event(
            ctx,
            body,
            None,
            outcome.phase,
            gate["reason"],
            gate.get("message") or "",
            warning=not gate.get("promoted"),
        )


def patch_status(ctx: Context, body: dict[str, Any], status: dict[str, Any]) -> None:
    """Merge-patch the fields of ``status`` that differ from the resource's (none: no
    request), and keep what the API server answers."""
    meta = body["metadata"]
    patch = merge_patch(body.get("status") or {}, status)
    if patch:
        written = raw(
            ctx.kube.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, meta["namespace"], PLURALS[body["kind"]], meta["name"],
            {"status": patch},
        )  # fmt: skip
        ctx.remember(written)


#: A Job without pods this long is asked why (its Events): the Job controller creates pods
#: within moments, so anything older is refused pods, not a slow controller.
NO_POD_GRACE_SECONDS = 10.0


def waiting_for_pods(job: dict[str, Any], now: datetime) -> bool:
    meta, spec = job.get("metadata") or {}, job.get("spec") or {}
    if spec.get("suspend") or meta.get("deletionTimestamp"):
        return False
    created = meta.get("creationTimestamp")
    if not created:
        return False
    age = now - datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return age.total_seconds() >= NO_POD_GRACE_SECONDS


def _resolve_pretrain(ctx: Context, job: FineTuneJob, obs: st.Observed) -> str | None:
    """The referenced PretrainJob's model URI once it succeeded; else fills why we wait."""
    ref = job.spec.base_model.pretrain_job_ref
    assert ref is not None
    found = trained_model(ctx, "PretrainJob", job.metadata.namespace or "default", ref.name)
    if found.failed:
        obs.base_failed = f"the base model's {found.failed}"
    obs.base_waiting = found.waiting
    return found.uri


@dataclass(frozen=True)
class TrainedModel:
    """A training job's model as another resource sees it: its URI once the job succeeded,
    else why it is not there (still to come, or never)."""

    uri: str | None = None
    waiting: str | None = None
    failed: str | None = None


def trained_model(ctx: Context, kind: str, namespace: str, name: str) -> TrainedModel:
    """The model of the FineTuneJob/PretrainJob ``name`` (from the cache, else read)."""
    with ctx.guard:
        trained = ctx.jobs.get((kind, namespace, name))
    if trained is None:  # not watched (another namespace's operator) or not seen yet
        trained = get_or_none(
            ctx.kube.custom.get_namespaced_custom_object,
            GROUP, VERSION, namespace, PLURALS[kind], name,
        )  # fmt: skip
    if trained is None:
        return TrainedModel(waiting=f"waiting for {kind} {name} (not found yet)")
    status = trained.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == Phase.FAILED:
        reason = (status.get("failure") or {}).get("reason") or "Failed"
        return TrainedModel(failed=f"{kind} {name} failed ({reason})")
    if phase != Phase.SUCCEEDED:
        pct = (status.get("progress") or {}).get("percent")
        detail = f", {pct:.0f}%" if isinstance(pct, int | float) else ""
        return TrainedModel(waiting=f"waiting for {kind} {name} to succeed (now {phase}{detail})")
    uri: str | None = (status.get("model") or {}).get("uri")
    if not uri or not ch.ModelLocation.parse(uri):
        return TrainedModel(
            failed=f"{kind} {name} succeeded but its model is not on a volume claim "
            "(set its spec.output.volumeClaimName)"
        )
    return TrainedModel(uri=uri)


def _start_attempt(
    ctx: Context,
    job: AnyJob,
    attempt: int,
    pretrain_uri: str | None,
    existing: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """Create the attempt's ConfigMap and Job (409 tolerated); returns the Job."""
    ns = job.metadata.namespace or "default"
    if attempt in existing:
        return existing[attempt]
    # The policy (no moment where the pods are open to all) and the config (the pod mounts
    # it) exist before the Job; they do not depend on each other, so they are made at once:
    # one round trip less before a new job's Job. Every create tolerates 409 (a re-run).
    kube = ctx.kube
    policy: Future[dict[str, Any] | None] | None = None
    if ctx.settings.network_policies:
        policy = ctx.creates.submit(
            create_child,
            kube.networking.create_namespaced_network_policy,
            ns,
            ch.build_training_network_policy(job),
            kube.networking.read_namespaced_network_policy,
        )
    config = ch.build_config_map(job, ctx.settings, pretrain_uri)
    create_child(
        kube.core.create_namespaced_config_map, ns, config, kube.core.read_namespaced_config_map
    )
    if policy is not None:
        policy.result()  # raises what the create raised (a refusal: ChildRefused)
    endpoint = _start_rendezvous(ctx, job, attempt) if job.spec.resources.nodes > 1 else None
    manifest = ch.build_training_job(
        job, ctx.settings, attempt, ctx.caps, pretrain_uri, rendezvous_endpoint=endpoint
    )
    created = create_child(
        kube.batch.create_namespaced_job, ns, manifest, kube.batch.read_namespaced_job
    )
    if created is not None:
        ctx.children.observe(created)  # the next reconcile must see it, watch or not
        return created
    # It existed (a reconcile before a crash created it): observe the real one.
    return cast(
        "dict[str, Any]", raw(ctx.kube.batch.read_namespaced_job, manifest["metadata"]["name"], ns)
    )


def _start_rendezvous(ctx: Context, job: AnyJob, attempt: int) -> str:
    """Create a multi-node attempt's store (Job + ClusterIP Service, 409 tolerated) before
    its trainer pods; returns ``clusterIP:port``, the address the pods dial."""
    ns, kube = job.metadata.namespace or "default", ctx.kube
    store = ch.build_rendezvous_job(job, ctx.settings, attempt, ctx.caps)
    created = create_child(
        kube.batch.create_namespaced_job, ns, store, kube.batch.read_namespaced_job
    )
    if created is not None:
        ctx.children.observe(created)
    service = ch.build_rendezvous_service(job, attempt)
    create_child(
        kube.core.create_namespaced_service, ns, service, kube.core.read_namespaced_service
    )
    name = service["metadata"]["name"]
    cluster_ip = raw(kube.core.read_namespaced_service, name, ns)["spec"]["clusterIP"]
    return f"{cluster_ip}:{RENDEZVOUS_PORT}"


def _retire_rendezvous(
    ctx: Context, namespace: str, stores: dict[int, dict[str, Any]], keep: int | None
) -> None:
    """Delete the stores (Job, its pod, Service) of attempts that are over: every one but
    ``keep``, the current attempt while it may still run. 404s are fine (a re-run)."""
    for attempt, store in stores.items():
        if attempt == keep or (store.get("metadata") or {}).get("deletionTimestamp"):
            continue
        name = store["metadata"]["name"]
        delete_child(ctx.kube.core.delete_namespaced_service, name, namespace)
        # The Job last: while it is listed, a re-run deletes the Service again.
        batch = ctx.kube.batch
        if delete_child(
            batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
        ):
            log.info("deleted the rendezvous store %s/%s (attempt %d is over)", namespace, name, attempt)  # fmt: skip


def _apply_suspend(ctx: Context, job: AnyJob, current: dict[str, Any]) -> dict[str, Any]:
    """Make the attempt's Job follow spec.suspend.

    Kubernetes >= 1.21 has ``Job.spec.suspend``: flip it (Kueue does the same on admission,
    so with a queue label we only ever suspend, and leave unsuspending to Kueue). Kubernetes
    1.20 has no such field: suspending deletes the attempt's Job (foreground, so its pods are
    gone before a new attempt starts) and resuming starts the next attempt, which restores
    from the last checkpoint on the model volume.
    """
    kube = ctx.kube
    ns = job.metadata.namespace or "default"
    name = current["metadata"]["name"]
    jstatus = current.get("status") or {}
    finished = any(
        c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
        for c in jstatus.get("conditions") or []
    )
    if finished or (current.get("metadata") or {}).get("deletionTimestamp"):
        return current
    want = job.spec.suspend
    if ctx.caps.job_suspend:
        have = bool((current.get("spec") or {}).get("suspend"))
        if want != have and (want or not job.spec.resources.queue_name):
            return cast(
                "dict[str, Any]",
                raw(kube.batch.patch_namespaced_job, name, ns, {"spec": {"suspend": want}}),
            )
        return current
    if want:
        foreground = client.V1DeleteOptions(propagation_policy="Foreground")
        if delete_child(kube.batch.delete_namespaced_job, name, ns, body=foreground):
            log.info("suspended %s/%s by deleting Job %s (no Job.spec.suspend)", ns, job.metadata.name, name)  # fmt: skip
        return {**current, "metadata": {**current["metadata"], "deletionTimestamp": "now"}}
    return current


def read_progress(
    ctx: Context, key: tuple[str, str, str], pods: list[dict[str, Any]], force: bool
) -> trainer_log.TrainerReport | None:
    """The trainer's newest JSON lines from the pod log tail, at most once per refresh
    interval per job (log reads cost the API server more than anything else we do)."""
    started = [
        p
        for p in pods
        if any(
            (cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        )
    ]
    if not started:
        return None
    now = time.monotonic()
    last = ctx.last_log_read.get(key)
    if not force and last is not None and now - last < ctx.settings.progress_refresh_seconds:
        return None
    ctx.last_log_read[key] = now
    # Rank 0 alone writes events: in a multi-node attempt, the pod that had them last time
    # first, then the newest (elastic regrouping may move rank 0 to a replacement pod).
    reported = ctx.reporting_pod.get(key)
    started.sort(
        key=lambda p: (
            p["metadata"]["name"] == reported,
            p["metadata"].get("creationTimestamp") or "",
        ),
        reverse=True,
    )
    for pod in started:
        try:
            text = ctx.kube.core.read_namespaced_pod_log(
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                container=ch.TRAINER_CONTAINER,
                tail_lines=ctx.settings.progress_tail_lines,
            )
        except ApiException as exc:
            log.debug("cannot read the log of %s: %s", pod["metadata"]["name"], exc.reason)
            continue
        report = trainer_log.parse_trainer_lines(text or "")
        if report.has_events or len(started) == 1:
            ctx.reporting_pod[key] = pod["metadata"]["name"]
            return report
    return None


def _reconcile_serving(
    ctx: Context, job: AnyJob, outcome: st.Outcome, obs: st.Observed, uid: str | None
) -> None:
    """Create, roll (patch on a spec-hash change) or remove the serving Deployment + Service
    (only ever this job's: another object of the name is a Conflict, left alone)."""
    kube = ctx.kube
    ns = job.metadata.namespace or "default"
    name = ch.serving_name(job.metadata.name or "")
    if outcome.deploy_serving:
        desired = ch.build_serving_deployment(job, ctx.settings, (outcome.status.get("model") or {}).get("uri"))  # fmt: skip
        current = obs.deployment
        if current is None:
            create_child(
                kube.apps.create_namespaced_deployment,
                ns,
                desired,
                kube.apps.read_namespaced_deployment,
            )
        else:
            have = ((current.get("metadata") or {}).get("annotations") or {}).get(ch.SPEC_HASH_ANNOTATION)  # fmt: skip
            want = desired["metadata"]["annotations"][ch.SPEC_HASH_ANNOTATION]
            if have != want:
                # The body is the wire dict, which the client takes in place of its model.
                kube.apps.replace_namespaced_deployment(
                    name, ns, {**desired, "metadata": {**desired["metadata"],  # type: ignore[arg-type]
                               "resourceVersion": current["metadata"]["resourceVersion"]}},
                )  # fmt: skip
                log.info("rolled serving Deployment %s/%s", ns, name)
        service = ch.build_serving_service(job)
        create_child(
            kube.core.create_namespaced_service, ns, service, kube.core.read_namespaced_service
        )
        if ctx.settings.network_policies:
            create_child(
                kube.networking.create_namespaced_network_policy,
                ns,
                ch.build_serving_network_policy(job, ctx.settings),
                kube.networking.read_namespaced_network_policy,
            )
    elif not obs.serving_wanted and obs.old_status.get("serving"):
        # Serving was switched off or removed from the spec: take ours down.
        for read, delete in (
            (kube.apps.read_namespaced_deployment, kube.apps.delete_namespaced_deployment),
            (kube.core.read_namespaced_service, kube.core.delete_namespaced_service),
            (
                kube.networking.read_namespaced_network_policy,
                kube.networking.delete_namespaced_network_policy,
            ),
        ):
            if owned_by(get_or_none(raw, read, name, ns), uid):
                delete_child(delete, name, ns)


def emit_event(
    ctx: Context,
    body: dict[str, Any],
    old_phase: str | None,
    phase: str,
    reason: str,
    message: str,
    *,
    warning: bool | None = None,
) -> None:
    """A core/v1 Event on every phase transition (what `kubectl describe` shows); with
    ``old_phase`` None and ``warning`` set, a note on the current phase instead."""
    meta = body["metadata"]
    now = now_iso()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": (
            message if warning is not None else f"{old_phase or 'New'} -> {phase}: {message}"
        )[:1024],
        "type": "Warning" if (phase == Phase.FAILED if warning is None else warning) else "Normal",
        "source": {"component": "snowtrain-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }

    def post() -> None:
        try:
            send(ctx.kube.core.create_namespaced_event, meta["namespace"], event)
        except (ApiException, ValueError) as exc:  # an event is best-effort, never a failure
            log.warning("cannot post event for %s: %s", meta["name"], exc)

    # Off the reconcile's path: the next job's reconcile need not wait for this one's Event.
    ctx.events.submit(post)
