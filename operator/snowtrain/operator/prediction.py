"""One reconcile of one BatchPrediction: observe, decide (``prediction_status``), act.

Level-based and idempotent like the training reconcile: the Job is found by label before
one is created, names are deterministic (a second create answers 409), and the status is
recomputed from what is observed. Its model is a path, a claim, or a training job's
result: then the run waits for that job to succeed, and fails if it fails.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from snowtrain.api.batch import (
    BatchPrediction,
    PredictionModelStatus,
    PredictionOutputStatus,
)
from snowtrain.api.status import Phase
from snowtrain.api.validation import InvalidJob

from . import attempts
from . import children as ch
from . import prediction_children as pch
from .context import Context, Key, job_key
from .kube import ChildRefused, create_child, list_children, owned_by, raw
from .policy import policy_errors
from .prediction_status import PredictionObserved, PredictionOutcome, compute_prediction
from .reconcile import (
    emit_event,
    patch_status,
    read_progress,
    trained_model,
    waiting_for_pods,
)
from .status import SAFETY_RECHECK_SECONDS

log = logging.getLogger("snowtrain.operator")

PLURAL = BatchPrediction.PLURAL
#: How often a run waiting for its model's job looks again without a watch event.
WAITING_RECHECK_SECONDS = 30.0


def reconcile_prediction(
    ctx: Context, body: dict[str, Any], *, force_logs: bool
) -> PredictionOutcome:
    """Observe -> decide -> act -> write the status of one BatchPrediction."""
    meta = body["metadata"]
    key = job_key(body)
    obs = PredictionObserved(
        generation=int(meta.get("generation") or 1),
        old_status=body.get("status") or {},
        now=datetime.now(UTC),
        stuck_timeout_seconds=ctx.settings.stuck_timeout_seconds,
    )
    job: BatchPrediction | None = None
    try:
        job = ctx.parsed_prediction(key, body)
    except InvalidJob as exc:
        obs.invalid = f"invalid spec: {exc}"
    else:
        denied = policy_errors(job, ctx.settings)
        if denied:
            obs.invalid = "not allowed: " + "; ".join(str(e) for e in denied)
            job = None
    decided = obs.old_status.get("phase") in (Phase.SUCCEEDED, Phase.FAILED)
    model_uri: str | None = None
    model_name = ""
    if job is not None:
        obs.output = PredictionOutputStatus(
            table=job.spec.output.table, mode=job.spec.output.mode, run_id=pch.run_id(job)
        )
        model_uri, model_name = _resolve_model(ctx, job, obs)
        if model_uri:
            obs.model = PredictionModelStatus(uri=model_uri, name=model_name)
    current = _owned_job(ctx, body)
    if current is None and job is not None and model_uri and not decided:
        try:
            current = _start(ctx, job, model_uri, model_name)
        except ChildRefused as exc:
            obs.refused = (exc.reason, exc.message)
    _observe_job(ctx, key, obs, current, force_logs=force_logs)
    outcome = compute_prediction(obs)
    if outcome.stop_job and current is not None:
        raw(
            ctx.kube.batch.patch_namespaced_job,
            current["metadata"]["name"],
            meta["namespace"],
            {"spec": {"parallelism": 0}},
        )
    _write_status(ctx, body, outcome)
    ctx.due[key] = time.monotonic() + (
        WAITING_RECHECK_SECONDS if outcome.phase == Phase.WAITING else SAFETY_RECHECK_SECONDS
    )
    return outcome


def _resolve_model(
    ctx: Context, job: BatchPrediction, obs: PredictionObserved
) -> tuple[str | None, str]:
    """(the model's URI, what the MODEL column says), or (None, "") with why not in ``obs``."""
    model = job.spec.model
    if model.uri:
        return model.uri, model.uri
    ref = model.fine_tune_job_ref or model.pretrain_job_ref
    assert ref is not None
    kind = "FineTuneJob" if model.fine_tune_job_ref else "PretrainJob"
    obs.waits_for_job = True
    found = trained_model(ctx, kind, job.metadata.namespace or "default", ref.name)
    obs.model_waiting = found.waiting
    if found.failed:
        obs.model_failed = f"the model's {found.failed}"
    return found.uri, f"{kind}/{ref.name}"


def _owned_job(ctx: Context, body: dict[str, Any]) -> dict[str, Any] | None:
    """The run's Job: from the child index, or listed when the index cannot answer."""
    owner = job_key(body)
    jobs = ctx.children.children("Job", owner)
    if not jobs:
        labels = {ch.LABEL_JOB: owner[2], ch.LABEL_KIND: owner[0]}
        jobs = list_children(ctx.kube.batch.list_namespaced_job, owner[1], labels)
        ctx.children.put_all({**j, "kind": "Job"} for j in jobs)
    uid = (body.get("metadata") or {}).get("uid")
    mine = [j for j in jobs if owned_by(j, uid)]
    return mine[0] if mine else None


def _start(ctx: Context, job: BatchPrediction, model_uri: str, model_name: str) -> dict[str, Any]:
    """Create the NetworkPolicy, the ConfigMap and the Job (409 tolerated); returns the Job."""
    ns = job.metadata.namespace or "default"
    kube = ctx.kube
    if ctx.settings.network_policies:
        create_child(
            kube.networking.create_namespaced_network_policy,
            ns,
            pch.build_prediction_network_policy(job),
            kube.networking.read_namespaced_network_policy,
        )
    create_child(
        kube.core.create_namespaced_config_map,
        ns,
        pch.build_prediction_config_map(job, ctx.settings, model_uri, model_name),
        kube.core.read_namespaced_config_map,
    )
    manifest = pch.build_prediction_job(job, ctx.settings, model_uri)
    created = create_child(
        kube.batch.create_namespaced_job, ns, manifest, kube.batch.read_namespaced_job
    )
    if created is not None:
        ctx.children.observe(created)
        log.info("created prediction Job %s/%s", ns, manifest["metadata"]["name"])
        return created
    existing: dict[str, Any] = raw(kube.batch.read_namespaced_job, manifest["metadata"]["name"], ns)
    return existing


def _observe_job(
    ctx: Context,
    key: Key,
    obs: PredictionObserved,
    current: dict[str, Any] | None,
    *,
    force_logs: bool,
) -> None:
    """The Job's state: its pods and the predictor's lines, or the Events saying why it has
    no pod."""
    kind, ns, name = key
    pods: list[dict[str, Any]] = []
    job_events: list[dict[str, Any]] | None = None
    if current is not None:
        obs.job_name = current["metadata"]["name"]
        jstat = current.get("status") or {}
        if any(jstat.get(k) for k in ("active", "succeeded", "failed")):
            labels = {ch.LABEL_JOB: name, ch.LABEL_KIND: kind}
            pods = ctx.children.children("Pod", key, labels) or []
            if not pods:
                pods = list_children(ctx.kube.core.list_namespaced_pod, ns, labels)
                ctx.children.put_all({**p, "kind": "Pod"} for p in pods)
            obs.report = read_progress(ctx, key, pods, force_logs)
        elif waiting_for_pods(current, obs.now):
            job_events = ctx.failed_creates.of(ns, current["metadata"]["name"])
    obs.current = attempts.observe_attempt(current, pods, job_events=job_events)


def _write_status(ctx: Context, body: dict[str, Any], outcome: PredictionOutcome) -> None:
    """Patch what changed; an Event on a new phase."""
    old_phase = (body.get("status") or {}).get("phase")
    status = outcome.status
    patch_status(ctx, body, status.to_wire())
    if outcome.phase != old_phase:
        running = next((c.message for c in status.conditions if c.type == "Running"), "")
        failure = status.failure
        emit_event(
            ctx,
            body,
            old_phase,
            outcome.phase,
            (failure.reason if failure else None) or outcome.phase,
            (failure.message if failure else None) or running,
        )
