"""One reconcile of one TrainingSchedule: the tick, the runs, the model in service.

Level-based like the jobs' reconcile, so an operator killed at any point (or a standby taking
over) converges without a duplicate run or a lost promotion:

- a tick's run is named from the tick, so it is created at most once (a second create is a
  409); its probe Job likewise;
- what the endpoint serves is read from the stable Deployment's annotations (run, model,
  since), and a canary's start from its Deployment's creation time, never from memory;
- the status keeps what nothing else records: ticks that started no run, and the previous
  model in service.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from snowtrain.api.events import now_iso
from snowtrain.api.kinds import GROUP, JOB_KINDS, VERSION
from snowtrain.api.schedule import (
    HISTORY_RECORDS,
    CanaryStatus,
    RunRecord,
    ServedModel,
    TrainingSchedule,
    TrainingScheduleStatus,
    run_name,
    unchanged_record,
)
from snowtrain.api.status import ServingStatus
from snowtrain.api.validation import InvalidJob

from . import attempts
from . import children as ch
from . import schedule_children as sch
from .canary import CanaryHealth, canary_health
from .context import Context, job_key
from .kube import ChildRefused, create_child, delete_child, get_or_none, list_children, raw
from .policy import policy_errors
from .reconcile import emit_event, patch_status
from .server_pods import first_crash, server_pods
from .status import condition, parse_time

log = logging.getLogger("snowtrain.operator")

DECIDED = ("Succeeded", "Failed")
#: How often a schedule is looked at while something moves (a probe, a canary, a run).
BUSY_RECHECK_SECONDS = 5.0
#: The longest a schedule goes unlooked at (a safety net under the watch events).
IDLE_RECHECK_SECONDS = 60.0


@dataclass
class _Run:
    """A run as observed: the job object and what the schedule reads of it."""

    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def annotations(self) -> dict[str, str]:
        return self.body["metadata"].get("annotations") or {}

    @property
    def tick(self) -> str:
        return self.annotations.get(sch.ANNOTATION_TICK, "")

    @property
    def status(self) -> dict[str, Any]:
        return self.body.get("status") or {}

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def decided(self) -> bool:
        return self.phase in DECIDED

    @property
    def model(self) -> str | None:
        return (self.status.get("model") or {}).get("uri")

    @property
    def gate(self) -> dict[str, Any]:
        return self.status.get("promotion") or {}

    @property
    def passed_gate(self) -> bool:
        """Succeeded, with a model, and through its gate (or without one)."""
        has_gate = "promotion" in (self.body.get("spec") or {})
        return (
            self.phase == "Succeeded"
            and bool(self.model)
            and (not has_gate or self.gate.get("promoted") is True)
        )


@dataclass
class _State:
    """What one reconcile works with and writes back."""

    schedule: TrainingSchedule
    body: dict[str, Any]
    old: TrainingScheduleStatus
    now: datetime
    runs: list[_Run]
    status: TrainingScheduleStatus = field(default_factory=TrainingScheduleStatus)
    busy: bool = False
    """Something moves that no watch event announces in time (a probe's result is read
    on the next look anyway; a canary's clock, its error rate)."""
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    """(reason, message, warning) to post after the status is written."""
    serving_crash: str | None = None
    """Why the stable endpoint's server exited, while none of its pods is ready."""

    def note(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message, warning))


def reconcile_schedule(ctx: Context, body: dict[str, Any], *, force_logs: bool = False) -> str:
    """Observe -> decide -> act -> write the status of one TrainingSchedule; its phase."""
    del force_logs  # a schedule reads no logs
    meta = body["metadata"]
    key = job_key(body)
    old = _read_status(body)
    now = datetime.now(UTC)
    try:
        schedule = ctx.parsed_schedule(key, body)
    except InvalidJob as exc:
        return _write_invalid(ctx, body, old, f"invalid spec: {exc}")
    denied = policy_errors(schedule, ctx.settings)  # each run would be refused the same way
    if denied:
        return _write_invalid(ctx, body, old, "not allowed: " + "; ".join(map(str, denied)))
    state = _State(schedule, body, old, now, _runs(ctx, body))
    state.status = TrainingScheduleStatus(
        observed_generation=int(meta.get("generation") or 1),
        phase="Suspended" if schedule.spec.suspend else "Active",
        last_schedule_time=old.last_schedule_time,
        history=list(old.history),
        previous=old.previous,
        in_service=old.in_service,
        last_successful_run=old.last_successful_run,
    )
    _tick(ctx, state)
    _refresh_history(state)
    _serve(ctx, state)
    _prune(ctx, state)
    _conditions(state)
    patch_status(ctx, body, state.status.to_wire())
    for reason, message, warning in state.events:
        emit_event(ctx, body, None, state.status.phase or "", reason, message, warning=warning)
    next_tick = state.status.next_schedule_time
    wait = IDLE_RECHECK_SECONDS
    if next_tick:
        until = (datetime.fromisoformat(next_tick.replace("Z", "+00:00")) - now).total_seconds()
        wait = min(wait, max(until, 0.5))
    if state.busy or any(not r.decided for r in state.runs):
        wait = min(wait, BUSY_RECHECK_SECONDS)
    ctx.due[key] = time.monotonic() + wait
    return state.status.phase or ""


def _read_status(body: dict[str, Any]) -> TrainingScheduleStatus:
    try:
        return TrainingScheduleStatus.model_validate(body.get("status") or {})
    except ValueError:
        return TrainingScheduleStatus()


def _write_invalid(
    ctx: Context, body: dict[str, Any], old: TrainingScheduleStatus, message: str
) -> str:
    """An invalid or disallowed spec starts nothing; what already serves keeps serving."""
    meta = body["metadata"]
    now = datetime.now(UTC)
    generation = int(meta.get("generation") or 1)
    status = old.model_copy(
        update={
            "observed_generation": generation,
            "phase": "Failed",
            "conditions": [
                condition(old.conditions, now, generation, "Ready", False, "InvalidSpec", message)
            ],
        }
    )
    patch_status(ctx, body, status.to_wire())
    if old.phase != "Failed":
        emit_event(ctx, body, old.phase, "Failed", "InvalidSpec", message)
    return "Failed"


def _runs(ctx: Context, body: dict[str, Any]) -> list[_Run]:
    """The schedule's runs, from the operator's cache of every job (the informers'),
    oldest tick first."""
    meta = body["metadata"]
    uid, ns = meta.get("uid"), meta.get("namespace")
    runs = []
    for (kind, namespace, _), job in ctx.known():
        if kind not in JOB_KINDS or namespace != ns:
            continue
        refs = (job.get("metadata") or {}).get("ownerReferences") or []
        if any(ref.get("uid") == uid for ref in refs):
            runs.append(_Run(job))
    return sorted(runs, key=lambda r: (r.tick, r.name))


# --- ticks ----------------------------------------------------------------------------------


def _tick(ctx: Context, state: _State) -> None:
    """Handle the newest due tick: start its run, or record why not."""
    from .schedule_ticks import ticks

    spec = state.schedule.spec
    created = parse_time(state.body["metadata"].get("creationTimestamp")) or state.now
    since = parse_time(state.old.last_schedule_time) or created
    clock = ticks(spec.schedule, spec.time_zone, since, state.now)
    state.status.next_schedule_time = now_iso(clock.next)
    if clock.due is None:
        return
    if spec.suspend:
        state.status.last_schedule_time = now_iso(clock.due)  # suspended ticks never run later
        return
    record = _handle_tick(ctx, state, clock.due, clock.late_seconds)
    if record is None:
        state.busy = True  # its probe is still out
        return
    state.status.last_schedule_time = now_iso(clock.due)
    _record(state, record)


def _handle_tick(
    ctx: Context, state: _State, tick: datetime, late_seconds: float
) -> RunRecord | None:
    """The tick's record, or None while its probe has not answered yet."""
    spec = state.schedule.spec
    name = run_name(state.schedule.metadata.name or "", tick)
    at = now_iso(tick)
    if any(r.name == name for r in state.runs):
        return RunRecord(name=name, scheduled_time=at, phase="Pending")  # created before a restart
    too_late = bool(spec.starting_deadline_seconds and late_seconds > spec.starting_deadline_seconds)  # fmt: skip
    if too_late and not (spec.data_trigger and _probe_job(ctx, state, tick)):
        # (a tick whose probe started in time is not late because the probe took a while)
        message = f"{int(late_seconds)} s late, past startingDeadlineSeconds ({spec.starting_deadline_seconds})"  # fmt: skip
        state.note("Missed", message, True)
        return RunRecord(scheduled_time=at, phase="Missed", reason="MissedDeadline", message=message)  # fmt: skip
    active = [r for r in state.runs if not r.decided]
    if active and spec.concurrency_policy == "Forbid":
        message = f"run {active[-1].name} is still {active[-1].phase} (concurrencyPolicy Forbid)"
        state.note("Skipped", message)
        return RunRecord(scheduled_time=at, phase="Skipped", reason="ConcurrencyForbid", message=message)  # fmt: skip
    fingerprint: str | None = None
    rows: int | None = None
    if spec.data_trigger is not None:
        probe = _probe(ctx, state, tick)
        if probe is None:
            return None
        if isinstance(probe, str):
            state.note("Skipped", f"tick {at}: {probe}", True)
            return RunRecord(scheduled_time=at, phase="Skipped", reason="ProbeFailed", message=probe)  # fmt: skip
        fingerprint, rows, newest = probe
        last = _last_fingerprint(state)
        if last is not None and last[1] == fingerprint:
            _delete_probe(ctx, state, tick)
            skipped = unchanged_record(at, last[0], fingerprint, rows, newest)
            state.note("Skipped", skipped.message or "")
            return skipped
    for run in active:  # concurrencyPolicy Replace
        _delete_run(ctx, run)
        state.note("Replaced", f"run {run.name} was deleted for the tick of {at}", True)
    in_service = state.status.in_service
    manifest = sch.build_run(
        state.schedule,
        tick,
        champion_uri=in_service.model if in_service else None,
        fingerprint=fingerprint,
        rows=rows,
    )
    kind = manifest["kind"]
    try:
        plural = JOB_KINDS[kind].PLURAL
        created = create_child(
            lambda ns, body, **kw: ctx.kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, plural, body, **kw
            ),
            state.schedule.metadata.namespace or "default",
            manifest,
        )
    except ChildRefused as exc:
        state.note("RunRefused", f"{name}: {exc.message}", True)
        return RunRecord(name=name, scheduled_time=at, phase="Failed", reason=exc.reason, message=exc.message)  # fmt: skip
    if created is not None:
        ctx.remember(created)
        state.runs.append(_Run(created))
        log.info("schedule %s started run %s", state.schedule.metadata.name, name)
        state.note("RunStarted", f"run {name} for the tick of {at}")
    _delete_probe(ctx, state, tick)
    return RunRecord(
        name=name,
        scheduled_time=at,
        phase="Pending",
        data_fingerprint=fingerprint,
        data_rows=rows,
    )


def _last_fingerprint(state: _State) -> tuple[str, str] | None:
    """(run, fingerprint) of the newest successful run: what the data trigger compares."""
    for run in reversed(state.runs):
        fingerprint = run.annotations.get(sch.ANNOTATION_FINGERPRINT)
        if run.phase == "Succeeded" and fingerprint:
            return run.name, fingerprint
    last = state.old.last_successful_run  # its run may have been pruned
    if last and last.name and last.data_fingerprint:
        return last.name, last.data_fingerprint
    return None


def _probe(ctx: Context, state: _State, tick: datetime) -> tuple[str, int, str | None] | str | None:
    """(fingerprint, rows, newest) once the tick's probe answered; a message when it failed;
    None while it runs (created here when missing)."""
    schedule = state.schedule
    ns = schedule.metadata.namespace or "default"
    name = sch.probe_name(schedule.metadata.name or "", tick)
    job = _probe_job(ctx, state, tick)
    if job is None:
        kube = ctx.kube
        create_child(
            kube.core.create_namespaced_config_map,
            ns,
            sch.build_probe_config_map(schedule, tick),
            kube.core.read_namespaced_config_map,
        )
        create_child(
            kube.batch.create_namespaced_job,
            ns,
            sch.build_probe_job(schedule, tick, ctx.settings),
            kube.batch.read_namespaced_job,
        )
        return None
    pods = list_children(
        ctx.kube.core.list_namespaced_pod, ns, {"job-name": name}
    )  # the Job controller's own label
    seen = attempts.observe_attempt(job, pods)
    summary = seen.termination
    if seen.state == "succeeded" and summary is not None and summary.probe is not None:
        probe = summary.probe
        return probe.fingerprint, probe.rows, probe.newest
    if seen.state == "failed":
        message = f"the data probe failed: {seen.reason}: {seen.message}"
        _delete_probe(ctx, state, tick)
        return message
    return None


def _probe_job(ctx: Context, state: _State, tick: datetime) -> dict[str, Any] | None:
    ns = state.schedule.metadata.namespace or "default"
    name = sch.probe_name(state.schedule.metadata.name or "", tick)
    job: dict[str, Any] | None = get_or_none(raw, ctx.kube.batch.read_namespaced_job, name, ns)
    return job


def _delete_probe(ctx: Context, state: _State, tick: datetime) -> None:
    ns = state.schedule.metadata.namespace or "default"
    name = sch.probe_name(state.schedule.metadata.name or "", tick)
    delete_child(ctx.kube.batch.delete_namespaced_job, name, ns, propagation_policy="Background")
    delete_child(ctx.kube.core.delete_namespaced_config_map, ch.config_map_name(name), ns)


def _delete_run(ctx: Context, run: _Run) -> None:
    meta = run.body["metadata"]
    delete_child(
        lambda name, ns, **kw: ctx.kube.custom.delete_namespaced_custom_object(
            GROUP, VERSION, ns, JOB_KINDS[run.body["kind"]].PLURAL, name, **kw
        ),
        meta["name"],
        meta["namespace"],
        propagation_policy="Background",
    )


def _record(state: _State, record: RunRecord) -> None:
    """Newest first; a record of the same run or tick is replaced, not repeated."""
    history = [
        r
        for r in state.status.history
        if not (
            (record.name and r.name == record.name)
            or (not record.name and not r.name and r.scheduled_time == record.scheduled_time)
        )
    ]
    state.status.history = [record, *history][:HISTORY_RECORDS]


def _refresh_history(state: _State) -> None:
    """Each run's record from the run as it is now: phase, gate, metrics, model."""
    by_name = {r.name: r for r in state.runs}
    refreshed = []
    for record in state.status.history:
        run = by_name.get(record.name or "")
        if run is not None:
            record = _run_record(run, record)
        refreshed.append(record)
    known = {r.name for r in refreshed}
    for run in state.runs:  # a run created before the status write that would have said so
        if run.name not in known:
            refreshed.append(_run_record(run, RunRecord(name=run.name)))
    refreshed.sort(key=lambda r: r.scheduled_time or "", reverse=True)
    state.status.history = refreshed[:HISTORY_RECORDS]
    state.status.active_run = next((r.name for r in reversed(state.runs) if not r.decided), None)
    for run in reversed(state.runs):
        if run.phase == "Succeeded":
            state.status.last_successful_run = _run_record(run, RunRecord(name=run.name))
            break


def _run_record(run: _Run, old: RunRecord) -> RunRecord:
    gate = run.gate
    failure = run.status.get("failure") or {}
    record = old.model_copy(
        update={
            "name": run.name,
            "scheduled_time": run.tick or old.scheduled_time,
            "phase": run.phase,
            "data_fingerprint": run.annotations.get(sch.ANNOTATION_FINGERPRINT)
            or old.data_fingerprint,
            "model": run.model,
            "metric": gate.get("metric"),
            "value": gate.get("value"),
            "champion_value": gate.get("championValue"),
        }
    )
    rows = run.annotations.get(sch.ANNOTATION_ROWS)
    if rows and rows.isdigit():
        record.data_rows = int(rows)
    if run.phase == "Failed":
        record.reason, record.message = failure.get("reason"), failure.get("message")
    elif run.phase == "Succeeded" and gate and old.reason not in _ROLLOUT_REASONS:
        record.reason, record.message = gate.get("reason"), gate.get("message")
        if not gate.get("promoted"):
            record.promoted = False
    return record


#: Reasons the rollout (not the gate) wrote into a run's record; they stand.
_ROLLOUT_REASONS = ("Promoted", "CanaryFailed", "Pinned")


# --- serving --------------------------------------------------------------------------------


def _served(deployment: dict[str, Any] | None) -> ServedModel | None:
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    if sch.ANNOTATION_MODEL not in annotations:
        return None
    return ServedModel(
        run=annotations.get(sch.ANNOTATION_RUN),
        model=annotations[sch.ANNOTATION_MODEL],
        since=annotations.get(sch.ANNOTATION_SINCE),
    )


def _candidate(state: _State) -> tuple[_Run | None, str]:
    """The run whose model should be in service, and why (Pinned or Promoted)."""
    spec = state.schedule.spec
    if spec.pinned_run:
        pinned = next((r for r in state.runs if r.name == spec.pinned_run), None)
        if pinned is not None and pinned.phase == "Succeeded" and pinned.model:
            return pinned, "Pinned"
        return None, "Pinned"
    current = state.status.in_service
    current_tick = next((r.tick for r in state.runs if current and r.name == current.run), "")
    rejected = {r.name for r in state.status.history if r.reason == "CanaryFailed"}
    for run in reversed(state.runs):
        if not run.passed_gate or run.name in rejected:
            continue
        if current and (run.name == current.run or run.tick <= current_tick):
            return None, "Promoted"  # never back to an older run by itself
        return run, "Promoted"
    return None, "Promoted"


def _serve(ctx: Context, state: _State) -> None:
    """Put the chosen model in service: at once when nothing serves yet or a run is pinned,
    through a canary when one is configured, else by rolling the stable Deployment."""
    schedule = state.schedule
    spec = schedule.spec
    ns = schedule.metadata.namespace or "default"
    name = schedule.metadata.name or ""
    kube = ctx.kube
    stable = canary = None
    if spec.serving is not None:
        stable = get_or_none(raw, kube.apps.read_namespaced_deployment, sch.endpoint_name(name), ns)
        canary = get_or_none(raw, kube.apps.read_namespaced_deployment, sch.canary_name(name), ns)
        state.status.in_service = _served(stable) or state.status.in_service
    run, why = _candidate(state)
    if spec.pinned_run and run is None and state.old.observed_generation != state.status.observed_generation:  # fmt: skip
        state.note("PinRefused", f"spec.pinnedRun: {spec.pinned_run} is not a succeeded run of this schedule", True)  # fmt: skip
    current = state.status.in_service
    if run is None or (current is not None and current.run == run.name):
        if canary is not None and (run is None or current is not None):
            _end_canary(ctx, state, canary, promoted=False, why="the model it tried is no longer the candidate")  # fmt: skip
        if stable is not None and current is not None and current.run and current.model:
            _keep_stable_current(ctx, state, stable, current)
        _endpoint_status(ctx, state, stable)
        return
    assert run.model is not None
    if spec.serving is None:  # no endpoint: the champion is only what the next gate compares
        _promote(state, run, why)
        return
    since = now_iso(state.now)
    use_canary = spec.serving.canary is not None and current is not None and why != "Pinned"
    if not use_canary:
        if canary is not None:
            _end_canary(ctx, state, canary, promoted=False, why="a pinned run replaced it")
        _apply_stable(ctx, state, stable, run, since)
        _promote(state, run, why)
        _endpoint_status(ctx, state, stable)
        return
    _run_canary(ctx, state, stable, canary, run)


def _apply_stable(
    ctx: Context, state: _State, stable: dict[str, Any] | None, run: _Run, since: str
) -> None:
    kube = ctx.kube
    schedule = state.schedule
    ns = schedule.metadata.namespace or "default"
    desired = sch.build_endpoint_deployment(
        schedule, ctx.settings, run=run.name, model_uri=run.model or "", track=sch.STABLE,
        since=since,
    )  # fmt: skip
    if stable is None:
        create_child(kube.apps.create_namespaced_deployment, ns, desired, kube.apps.read_namespaced_deployment)  # fmt: skip
    else:
        desired["metadata"]["resourceVersion"] = stable["metadata"]["resourceVersion"]
        raw(kube.apps.replace_namespaced_deployment, desired["metadata"]["name"], ns, desired)
    create_child(kube.core.create_namespaced_service, ns, sch.build_endpoint_service(schedule), kube.core.read_namespaced_service)  # fmt: skip
    if ctx.settings.network_policies:
        create_child(
            kube.networking.create_namespaced_network_policy,
            ns,
            sch.build_endpoint_network_policy(schedule, ctx.settings),
            kube.networking.read_namespaced_network_policy,
        )


def _keep_stable_current(
    ctx: Context, state: _State, stable: dict[str, Any], current: ServedModel
) -> None:
    """Roll the stable Deployment when the schedule's serving spec changed (replicas,
    resources, auth), keeping the model it serves."""
    desired = sch.build_endpoint_deployment(
        state.schedule, ctx.settings, run=current.run or "", model_uri=current.model or "",
        track=sch.STABLE, since=current.since,
    )  # fmt: skip
    have = (stable["metadata"].get("annotations") or {}).get(ch.SPEC_HASH_ANNOTATION)
    if have != desired["metadata"]["annotations"][ch.SPEC_HASH_ANNOTATION]:
        desired["metadata"]["resourceVersion"] = stable["metadata"]["resourceVersion"]
        ns = state.schedule.metadata.namespace or "default"
        raw(ctx.kube.apps.replace_namespaced_deployment, desired["metadata"]["name"], ns, desired)


def _promote(state: _State, run: _Run, why: str) -> None:
    """Record ``run``'s model as the one in service (and the one before as previous)."""
    current = state.status.in_service
    if current is not None and current.run != run.name:
        state.status.previous = current
    state.status.in_service = ServedModel(run=run.name, model=run.model, since=now_iso(state.now))
    message = f"run {run.name}'s model {run.model} is in service" + (
        f" (pinned by spec.pinnedRun; was {current.run})" if why == "Pinned" and current else ""
    )
    state.note(why, message)
    _mark(state, run.name, promoted=True, reason=why, message=message)


def _mark(state: _State, run: str, *, promoted: bool, reason: str, message: str) -> None:
    for record in state.status.history:
        if record.name == run:
            record.promoted, record.reason, record.message = promoted, reason, message


def _run_canary(
    ctx: Context,
    state: _State,
    stable: dict[str, Any] | None,
    canary: dict[str, Any] | None,
    run: _Run,
) -> None:
    """The candidate beside the model in service, behind the same Service, for
    ``canary.durationSeconds``: promoted when its pods were ready and its error rate stayed
    under the bar, rolled back otherwise. Pods that never get ready never get traffic."""
    schedule = state.schedule
    settings = schedule.spec.serving.canary  # type: ignore[union-attr]
    assert settings is not None
    ns = schedule.metadata.namespace or "default"
    kube = ctx.kube
    state.busy = True
    on_trial = _served(canary)
    if canary is not None and (on_trial is None or on_trial.run != run.name):
        _end_canary(ctx, state, canary, promoted=False, why=f"run {run.name} is newer")
        canary = None
    if canary is None:
        desired = sch.build_endpoint_deployment(
            schedule, ctx.settings, run=run.name, model_uri=run.model or "", track=sch.CANARY
        )
        create_child(kube.apps.create_namespaced_deployment, ns, desired, kube.apps.read_namespaced_deployment)  # fmt: skip
        state.note("CanaryStarted", f"run {run.name}'s model on {settings.replicas} canary pod(s) for {settings.duration_seconds} s")  # fmt: skip
        state.status.canary = CanaryStatus(
            run=run.name, model=run.model, started=now_iso(state.now)
        )
        _endpoint_status(ctx, state, stable)
        return
    started = parse_time(canary["metadata"].get("creationTimestamp")) or state.now
    port = schedule.spec.serving.port  # type: ignore[union-attr]
    health = canary_health(ctx, canary, port)
    log.info(
        "schedule %s: canary of %s: %d/%d ready (since %s), %d requests, %d errors",
        schedule.metadata.name, run.name, health.ready, settings.replicas, health.ready_since,
        health.requests, health.errors,
    )  # fmt: skip
    state.status.canary = CanaryStatus(
        run=run.name,
        model=run.model,
        started=now_iso(started),
        ready_replicas=health.ready,
        requests=health.requests,
        errors=health.errors,
    )
    age = (state.now - started).total_seconds()
    all_ready = health.ready >= settings.replicas
    ready_since = parse_time(health.ready_since) if all_ready else None
    serving_for = (state.now - ready_since).total_seconds() if ready_since else 0.0
    too_many_errors = _error_problem(health, settings.max_error_rate)
    if too_many_errors:  # no need to wait out the clock
        _reject_canary(ctx, state, canary, run, too_many_errors)
    elif health.crashed:  # nor a ready timeout for a server that already failed
        _reject_canary(ctx, state, canary, run, health.crashed)
    elif not all_ready and age >= settings.ready_timeout_seconds:
        why = f"{health.ready}/{settings.replicas} canary pods ready after {int(age)} s"
        _reject_canary(ctx, state, canary, run, why)
    elif all_ready and serving_for >= settings.duration_seconds:
        _apply_stable(ctx, state, stable, run, now_iso(state.now))
        _promote(state, run, "Promoted")
        _end_canary(ctx, state, canary, promoted=True, why="")
    _endpoint_status(ctx, state, stable)


def _error_problem(health: CanaryHealth, max_error_rate: float) -> str | None:
    if health.requests and health.errors / health.requests > max_error_rate:
        return (
            f"error rate {health.errors}/{health.requests} above "
            f"canary.maxErrorRate {max_error_rate}"
        )
    return None


def _reject_canary(
    ctx: Context, state: _State, canary: dict[str, Any], run: _Run, why: str
) -> None:
    message = f"run {run.name}'s canary was rolled back: {why}"
    _mark(state, run.name, promoted=False, reason="CanaryFailed", message=message)
    state.note("RolledBack", message, True)
    _end_canary(ctx, state, canary, promoted=False, why=why)


def _end_canary(
    ctx: Context, state: _State, canary: dict[str, Any], *, promoted: bool, why: str
) -> None:
    ns = state.schedule.metadata.namespace or "default"
    delete_child(ctx.kube.apps.delete_namespaced_deployment, canary["metadata"]["name"], ns)
    state.status.canary = None
    if not promoted and why:
        log.info("schedule %s: canary ended: %s", state.schedule.metadata.name, why)


def _endpoint_status(ctx: Context, state: _State, stable: dict[str, Any] | None) -> None:
    serving = state.schedule.spec.serving
    if serving is None:
        return
    name = sch.endpoint_name(state.schedule.metadata.name or "")
    ready = int(((stable or {}).get("status") or {}).get("readyReplicas") or 0)
    if stable is not None and not ready:
        # Why nothing serves, when a server exited (its pods say; the Deployment only counts).
        state.serving_crash = first_crash(server_pods(ctx, stable))
        state.busy = True  # a crash changes pods, not the Deployment: look again soon
    state.status.serving = ServingStatus(
        deployment=name,
        service=name,
        endpoint=f"http://{name}.{state.schedule.metadata.namespace}.svc:{serving.port}",
        ready_replicas=ready,
    )


# --- history limits -------------------------------------------------------------------------


def _prune(ctx: Context, state: _State) -> None:
    """Delete the oldest decided runs beyond the history limits, and their models; never the
    model in service, the previous one, or a pinned run."""
    spec = state.schedule.spec
    keep = {
        m.run for m in (state.status.in_service, state.status.previous) if m is not None and m.run
    } | ({spec.pinned_run} if spec.pinned_run else set())
    if state.status.canary and state.status.canary.run:
        keep.add(state.status.canary.run)
    for phase, limit in (
        ("Succeeded", spec.successful_runs_history_limit),
        ("Failed", spec.failed_runs_history_limit),
    ):
        decided = [r for r in state.runs if r.phase == phase]
        for run in decided[: max(len(decided) - limit, 0)]:
            if run.name in keep:
                continue
            _prune_run(ctx, state, run)


def _prune_run(ctx: Context, state: _State, run: _Run) -> None:
    ns = state.schedule.metadata.namespace or "default"
    model = run.model or (run.status.get("model") or {}).get("uri")
    if model:
        job = sch.build_prune_job(state.schedule, run.name, model, ctx.settings)
        if job is not None:
            try:
                create_child(ctx.kube.batch.create_namespaced_job, ns, job)
            except ChildRefused as exc:
                log.warning("cannot prune %s's model: %s", run.name, exc.message)
                return
    _delete_run(ctx, run)
    state.runs.remove(run)
    state.note("Pruned", f"run {run.name} and its model were deleted (history limit)")


# --- conditions -----------------------------------------------------------------------------


def _conditions(state: _State) -> None:
    status, old, now = state.status, state.old.conditions, state.now
    gen = status.observed_generation or 1
    serving = state.schedule.spec.serving
    conds = []
    if serving is not None:
        ready = bool(status.serving and status.serving.ready_replicas)
        if status.in_service is None:
            reason, message = "NoModelYet", "no run has been promoted yet"
        elif ready:
            reason, message = "Serving", f"run {status.in_service.run}'s model at {status.serving.endpoint}"  # type: ignore[union-attr]  # fmt: skip
        elif state.serving_crash:
            reason, message = "ServerFailing", f"run {status.in_service.run}'s model: {state.serving_crash}"  # fmt: skip
        else:
            reason, message = "RollingOut", f"run {status.in_service.run}'s model is starting"
        conds.append(condition(old, now, gen, "Serving", ready, reason, message))
    else:
        ready = True
        reason, message = "Scheduled", f"next run at {status.next_schedule_time}"
    canary = status.canary
    conds.append(
        condition(
            old, now, gen, "CanaryInProgress", canary is not None,
            "Canary" if canary else "NoCanary",
            f"run {canary.run} on trial since {canary.started}" if canary else "no canary",
        )
    )  # fmt: skip
    conds.insert(0, condition(old, now, gen, "Ready", ready, reason, message))
    status.conditions = conds
