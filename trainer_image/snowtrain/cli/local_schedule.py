"""``snowtrain run schedule.yaml --once``: one tick of a TrainingSchedule on this machine.

There is no operator here to keep the clock, so a tick happens when it is asked for (by
hand, or from cron). Each one does what the operator's reconcile does for a tick, with the
same functions where they are pure:

1. the data probe (``dataTrigger``): :func:`snowtrain.probe.run.probe`, in process, against
   the Snowflake local mode uses; a fingerprint equal to the last successful run's skips the
   tick (``Skipped``/``DataUnchanged``);
2. the run: :func:`snowtrain.api.schedule.run_manifest` (what the operator creates, minus
   the owner reference), its champion the model in service, trained by :class:`LocalRun`
   exactly as ``snowtrain run finetune.yaml`` trains;
3. the gate: :func:`snowtrain.api.promotion.decide` on the trainer's metrics and the
   champion's (as the operator's job status decides it); a promoted model goes into service;
4. the endpoint: with ``spec.serving`` (or ``--serve``), the model in service is served as
   the schedule's name, as ``snowtrain run`` serves a job's model.

What makes successive ``--once`` behave like successive ticks is the schedule's directory
(default ``./snowtrain-runs/trainingschedule/<name>``, or ``--output``)::

    state.json      the schedule's status, in the API's own shape (TrainingScheduleStatus:
                    inService, previous, lastSuccessfulRun, history, ...), as
                    ``kubectl get tsch -o jsonpath={.status}`` shows it on a cluster, with
                    local model directories where the cluster has pvc:// URIs
    <run>/          one directory per run, as ``snowtrain run`` keeps a job's: run.json (the
                    manifest the tick created), trainer-config.json, model/, checkpoints/, ...
    emulator.log    the embedded emulator's log, when it stood in for Snowflake

Two differences from the cluster, both because there is no controller in between: a tick
is "now" (to the minute, and always after the last tick recorded, so two ticks in one
minute still get two runs), and a run stopped by Ctrl-C stays the active run: the next
``--once`` resumes it from its checkpoint instead of starting a new tick (``--fresh`` gives
it up), much as concurrencyPolicy Forbid lets an active run finish first.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snowtrain.api import AnyJob, InvalidJob, parse_job
from snowtrain.api.events import DataProbe, ExitCode, TrainerSummary, now_iso
from snowtrain.api.identifiers import canonical_column
from snowtrain.api.probe_config import ProbeConfig
from snowtrain.api.promotion import verdict
from snowtrain.api.schedule import (
    HISTORY_RECORDS,
    RunRecord,
    ServedModel,
    TrainingSchedule,
    TrainingScheduleStatus,
    run_manifest,
    run_name,
    unchanged_record,
)
from snowtrain.api.status import PromotionStatus
from snowtrain.api.trainer_config import snowflake_settings
from snowtrain.api.validation import template_job

from . import credentials
from .errors import UserError
from .local_run import LocalRun
from .plan import DEFAULT_RUNS_ROOT, check_resumable, plan_run

STATE_FILE: Final = "state.json"
LOCK_FILE: Final = ".lock"
#: The manifest a tick created, kept in its run directory (a resumed run trains it again).
RUN_MANIFEST: Final = "run.json"
#: The record of a run Ctrl-C stopped: still the active run, resumed by the next tick.
INTERRUPTED: Final = "Interrupted"
#: Rows of the history shown after a tick.
HISTORY_SHOWN: Final = 5


def schedule_dir(schedule: TrainingSchedule, output: Path | None) -> Path:
    """Where the schedule's state and runs live: ``--output``, else beside the jobs' runs."""
    name = schedule.metadata.name or "schedule"
    return (output or DEFAULT_RUNS_ROOT / "trainingschedule" / name).resolve()


# --- the state file ---------------------------------------------------------------------------


def load_state(path: Path) -> TrainingScheduleStatus:
    """The schedule's status as the last tick left it (empty before the first)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return TrainingScheduleStatus()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        doc = json.loads(text)
        return TrainingScheduleStatus.model_validate(doc.get("status") or {})
    except (json.JSONDecodeError, AttributeError, ValidationError) as exc:
        raise UserError(
            f"{path}: not a schedule state file ({type(exc).__name__}); move it away to "
            "start the schedule over (its run directories stay usable)"
        ) from None


def save_state(path: Path, schedule: TrainingSchedule, status: TrainingScheduleStatus) -> None:
    """Write the state atomically, so a crash mid-write leaves the previous one whole."""
    doc = {
        "apiVersion": schedule.api_version,
        "kind": schedule.KIND,
        "metadata": {"name": schedule.metadata.name},
        "status": status.to_wire(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def locked(directory: Path, schedule: str) -> Iterator[None]:
    """One tick at a time per schedule directory (two would race for the state and could
    create the same run twice): a second ``--once`` is refused while one runs."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another snowtrain run of TrainingSchedule {schedule} is in progress in "
                f"{directory}; wait for it to finish"
            ) from None
        yield


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def next_tick(status: TrainingScheduleStatus, now: datetime) -> datetime:
    """The tick of this ``--once``: now, to the minute (runs are named in minutes), but
    after the last tick recorded, so every tick gets a run of its own and runs sort by
    tick as on the cluster."""
    tick = now.astimezone(UTC).replace(second=0, microsecond=0)
    last = _parse_time(status.last_schedule_time)
    if last is not None and tick <= last:
        tick = last + timedelta(minutes=1)
    return tick


def record(status: TrainingScheduleStatus, entry: RunRecord) -> None:
    """Newest first, at most HISTORY_RECORDS (as the operator keeps them); a record of the
    same run or the same tick replaces the old one."""
    history = [
        r
        for r in status.history
        if not (
            (entry.name and r.name == entry.name)
            or (not entry.name and not r.name and r.scheduled_time == entry.scheduled_time)
        )
    ]
    status.history = [entry, *history][:HISTORY_RECORDS]


def interrupted_run(status: TrainingScheduleStatus) -> RunRecord | None:
    """The run a Ctrl-C stopped, which the next tick resumes (the newest record only)."""
    newest = status.history[0] if status.history else None
    if newest is not None and newest.name and newest.phase == "Running":
        return newest
    return None


def last_fingerprint(status: TrainingScheduleStatus) -> tuple[str, str] | None:
    """(run, fingerprint) of the newest successful run: what the data trigger compares."""
    last = status.last_successful_run
    if last is not None and last.name and last.data_fingerprint:
        return last.name, last.data_fingerprint
    return None


def _run_order(name: str) -> int:
    """A run's tick in minutes (``<schedule>-<minutes>``), to sort runs oldest first."""
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def runs_on_disk(directory: Path) -> list[str]:
    """The run directories a tick created (they hold run.json), oldest first."""
    if not directory.is_dir():
        return []
    names = [p.name for p in directory.iterdir() if (p / RUN_MANIFEST).is_file()]
    return sorted(names, key=_run_order)


def run_phase(directory: Path, name: str, status: TrainingScheduleStatus) -> str | None:
    """Succeeded, Failed, Running or None (unknown): the history's word, else the trainer's
    termination message (a run older than the history still has one)."""
    for entry in status.history:
        if entry.name == name and entry.phase:
            return entry.phase
    try:
        summary = TrainerSummary.model_validate_json(
            (directory / name / "termination.json").read_text()
        )
    except (OSError, ValidationError):
        return None
    return {"Succeeded": "Succeeded", "Failed": "Failed"}.get(summary.outcome)


def runs_to_prune(
    schedule: TrainingSchedule, status: TrainingScheduleStatus, runs: list[tuple[str, str | None]]
) -> list[str]:
    """The oldest decided runs beyond the history limits (``runs``: (name, phase), oldest
    first); never the model in service, the previous one, or a pinned run -- the operator's
    rule, so a schedule run locally for months keeps as many models as on a cluster."""
    spec = schedule.spec
    keep = {m.run for m in (status.in_service, status.previous) if m is not None and m.run}
    if spec.pinned_run:
        keep.add(spec.pinned_run)
    pruned: list[str] = []
    for phase, limit in (
        ("Succeeded", spec.successful_runs_history_limit),
        ("Failed", spec.failed_runs_history_limit),
    ):
        decided = [name for name, p in runs if p == phase]
        pruned += [n for n in decided[: max(len(decided) - limit, 0)] if n not in keep]
    return pruned


# --- the tick -------------------------------------------------------------------------------


def probe_config(schedule: TrainingSchedule, job: AnyJob) -> ProbeConfig:
    """The probe's config, as the operator's probe ConfigMap carries it (credentials come
    from the environment here, not from a mounted Secret)."""
    data = job.spec.data
    trigger = schedule.spec.data_trigger
    return ProbeConfig(
        name=schedule.metadata.name or "schedule",
        snowflake=snowflake_settings(data.snowflake),
        table=data.table,
        query=data.query,
        column=canonical_column(trigger.column) if trigger and trigger.column else None,
    )


def probe_data(config: ProbeConfig, env: dict[str, str]) -> DataProbe:
    """Run the probe's query in this process with the run's Snowflake (``env`` on top of
    the environment, as the trainer gets it). Raises the trainer's errors (``DataError``,
    ``Unavailable``, ``InvalidConfig``), each with its exit code."""
    from snowtrain.probe.run import probe
    from snowtrain.trainer.data.connection import LazyConnection
    from snowtrain.trainer.data.credentials import load_credentials

    creds = load_credentials(config.snowflake, {**os.environ, **env})
    conn = LazyConnection(config.snowflake, creds)
    try:
        return probe(config, conn)
    finally:
        conn.close()


def gate_verdict(job: AnyJob, summary: TrainerSummary | None) -> PromotionStatus | None:
    """The evaluation gate on a finished run, as the operator's job status decides it
    (``status._gate``): the run's metrics and the champion's on the same rows; None
    without ``spec.promotion`` (every succeeded run then goes into service)."""
    promotion = job.spec.promotion
    if promotion is None:
        return None
    metrics = summary.metrics.to_wire() if summary else {}
    return verdict(promotion, metrics, summary.champion if summary else None)


def _num(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


@dataclass
class _Tick:
    """The run one tick trains: its manifest, record and where it lives."""

    job: AnyJob
    manifest: dict[str, Any]
    entry: RunRecord
    resumed: bool = False


class LocalSchedule:
    """``snowtrain run schedule.yaml --once``; ``run()`` returns the process exit code."""

    def __init__(
        self,
        args: argparse.Namespace,
        console: Console,
        schedule: TrainingSchedule,
        now: datetime | None = None,
    ) -> None:
        self.args = args
        self.console = console
        self.schedule = schedule
        self.name = schedule.metadata.name or "schedule"
        self.dir = schedule_dir(schedule, args.output)
        self.state_path = self.dir / STATE_FILE
        self.now = now or datetime.now(UTC)
        self.runner = LocalRun(args, console)

    def say(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)

    def run(self) -> int:
        spec = self.schedule.spec
        serving = spec.serving
        serve = self.runner.wants_serving(serving)
        port = self.runner.serving_port(serving) if serve else None
        zone = spec.time_zone or "UTC"
        self.say(
            f"[bold]TrainingSchedule {self.name}[/] (on a cluster: {spec.schedule!r}, {zone}); "
            "one tick now",
        )
        self.say(f"Schedule directory: {self.dir}", markup=False)
        with locked(self.dir, self.name):
            status = load_state(self.state_path)
            status.phase = "Suspended" if spec.suspend else "Active"
            with ExitStack() as stack:
                code = self._tick(status, stack)
            if spec.pinned_run:
                self._pin(status, spec.pinned_run)
            self._prune(status)
            save_state(self.state_path, self.schedule, status)
        self._show(status)
        if code != 0:
            return code
        if not serve:
            if serving is not None and status.in_service is not None:
                self.say(
                    "Serve the model in service with: python -m snowtrain.serve --model-dir "
                    f"{status.in_service.model}",
                    markup=False,
                )
            return 0
        if status.in_service is None or not status.in_service.model:
            self.say("Nothing to serve: no run has been promoted yet.")
            return 0
        assert port is not None
        # The endpoint answers as the schedule, whichever run trained the model (as on a
        # cluster, where the stable Deployment keeps its name across promotions).
        return self.runner.serve(Path(status.in_service.model), self.name, self.dir, port)

    # -- steps --------------------------------------------------------------------------------
    def _tick(self, status: TrainingScheduleStatus, stack: ExitStack) -> int:
        """One tick: probe, create the run (or resume the active one), train, gate; the
        state is saved before training, so a crash leaves the run to resume."""
        spec = self.schedule.spec
        if spec.suspend:
            self.say("spec.suspend is true: this tick starts no run.")
            return 0
        template = self._template()
        active = interrupted_run(status)
        if active is not None and not (self.dir / (active.name or "") / RUN_MANIFEST).is_file():
            self._give_up(status, active, "its run directory is gone")
            active = None
        if active is not None and self.args.fresh:
            self._give_up(status, active, "given up with --fresh")
            active = None
        env = self.runner.snowflake_env(template, self.dir, stack)
        if active is not None:
            tick = self._resume(active)
        else:
            made = self._new_run(status, template, env)
            if isinstance(made, int):
                return made
            tick = made
        return self._train(status, tick, env)

    def _template(self) -> AnyJob:
        try:
            return template_job(self.schedule)
        except InvalidJob as exc:  # parse_schedule checked it; a guard, not a path users see
            raise UserError("\n".join(f"spec.jobTemplate.{e}" for e in exc.errors)) from None

    def _give_up(self, status: TrainingScheduleStatus, entry: RunRecord, why: str) -> None:
        self.say(f"Run {entry.name} was interrupted and is not resumed: {why}.", markup=False)
        record(
            status,
            entry.model_copy(update={"phase": "Failed", "reason": "Abandoned", "message": why}),
        )
        status.active_run = None

    def _resume(self, entry: RunRecord) -> _Tick:
        path = self.dir / (entry.name or "") / RUN_MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: cannot read the interrupted run ({exc})") from None
        self.say(
            f"Resuming run {entry.name} (interrupted; --fresh gives it up and starts a new tick)",
            markup=False,
        )
        return _Tick(self._parse_run(manifest), manifest, entry, resumed=True)

    def _new_run(
        self, status: TrainingScheduleStatus, template: AnyJob, env: dict[str, str]
    ) -> _Tick | int:
        """Probe (with a data trigger) and build the tick's run; an exit code when the tick
        ends without one (data unchanged: 0; the probe failed: its code)."""
        tick = next_tick(status, self.now)
        while (self.dir / run_name(self.name, tick)).exists():
            tick += timedelta(minutes=1)  # a run directory the state does not know
        at = now_iso(tick)
        fingerprint: str | None = None
        rows: int | None = None
        if self.schedule.spec.data_trigger is not None:
            from snowtrain.trainer.errors import TrainerError

            try:
                with self.console.status("Probing the data..."):
                    found = probe_data(probe_config(self.schedule, template), env)
            except TrainerError as exc:
                message = f"the data probe failed: {exc.reason}: {exc}"
                self.say(f"[red]Skipped:[/] {escape(message)}")
                record(
                    status,
                    RunRecord(
                        scheduled_time=at, phase="Skipped", reason="ProbeFailed", message=message
                    ),
                )
                status.last_schedule_time = at
                return int(exc.exit_code)
            fingerprint, rows = found.fingerprint, found.rows
            newest = f", newest {found.newest}" if found.newest else ""
            self.say(f"Data: {rows} rows{newest}, fingerprint {fingerprint[:12]}", markup=False)
            last = last_fingerprint(status)
            if last is not None and last[1] == fingerprint:
                skipped = unchanged_record(at, last[0], fingerprint, rows, found.newest)
                self.say(f"Skipped: {skipped.message}", markup=False)
                if (
                    credentials.resolve(self.args.snowflake, self.args.connection).mode
                    == "embedded"
                ):
                    self.say(
                        "(The embedded emulator holds the same example rows on every run; "
                        "configure Snowflake to see new rows start a run.)",
                        style="dim",
                    )
                record(status, skipped)
                status.last_schedule_time = at
                return 0
        in_service = status.in_service
        manifest = run_manifest(
            self.schedule,
            tick,
            champion_uri=in_service.model if in_service else None,
            fingerprint=fingerprint,
            rows=rows,
        )
        name = manifest["metadata"]["name"]
        entry = RunRecord(
            name=name,
            scheduled_time=at,
            phase="Running",
            data_fingerprint=fingerprint,
            data_rows=rows,
        )
        status.last_schedule_time = at
        return _Tick(self._parse_run(manifest), manifest, entry)

    def _parse_run(self, manifest: dict[str, Any]) -> AnyJob:
        try:
            return parse_job(manifest)
        except InvalidJob as exc:
            name = manifest.get("metadata", {}).get("name")
            lines = [
                f"the run {name} this tick creates is invalid:",
                *(f"  {e}" for e in exc.errors),
            ]
            raise UserError("\n".join(lines)) from None

    def _train(self, status: TrainingScheduleStatus, tick: _Tick, env: dict[str, str]) -> int:
        job, entry = tick.job, tick.entry
        name = entry.name or ""
        run_dir = self.dir / name
        plan = plan_run(
            job, yaml_path=self.args.file, output=run_dir, max_steps=self.args.max_steps
        )
        if tick.resumed:
            check_resumable(plan)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_MANIFEST).write_text(json.dumps(tick.manifest, indent=2) + "\n")
        status.active_run = name
        record(
            status, entry.model_copy(update={"phase": "Running", "reason": None, "message": None})
        )
        save_state(self.state_path, self.schedule, status)  # a crash now leaves it to resume

        champion = job.spec.promotion.champion_uri if job.spec.promotion else None
        self.say(
            f"[bold]Run {name}[/] ({job.kind}, {job.task}) for the tick of "
            f"{entry.scheduled_time} -> {run_dir}",
        )
        if plan.base_model_note:
            self.say(f"Base model: {plan.base_model_note}", markup=False)
        if job.spec.promotion is not None:
            self.say(
                f"Champion: {champion or 'none yet (nothing in service)'}",
                markup=False,
            )
        started = time.monotonic()
        code, summary, rows = self.runner.train(plan, env)
        if code == 130 or code == ExitCode.PREEMPTED:
            # Still the active run: the next --once resumes it from its checkpoint.
            message = "stopped; the next --once resumes it from its checkpoint"
            record(
                status,
                entry.model_copy(
                    update={"phase": "Running", "reason": INTERRUPTED, "message": message}
                ),
            )
            return code
        status.active_run = None
        if code != 0:
            record(
                status,
                entry.model_copy(
                    update={
                        "phase": "Failed",
                        "reason": (summary.reason if summary else None) or "Failed",
                        "message": (summary.message if summary else None) or "the trainer failed",
                    }
                ),
            )
            return code
        self.runner.report(
            plan,
            summary.outcome if summary else "Succeeded",
            summary.metrics.to_wire() if summary else {},
            rows,
            time.monotonic() - started,
            summary.champion if summary else None,
        )
        self._decide(status, job, entry, str(plan.model_dir), summary)
        return 0

    def _decide(
        self,
        status: TrainingScheduleStatus,
        job: AnyJob,
        entry: RunRecord,
        model: str,
        summary: TrainerSummary | None,
    ) -> None:
        """The gate's verdict on a succeeded run, and the model in service after it."""
        gate = gate_verdict(job, summary)
        passed = gate is None or bool(gate.promoted)
        done = entry.model_copy(
            update={
                "phase": "Succeeded",
                "model": model,
                "metric": gate.metric if gate else None,
                "value": gate.value if gate else None,
                "champion_value": gate.champion_value if gate else None,
            }
        )
        current = status.in_service
        if gate is None:
            self.say(
                "No evaluation gate (spec.jobTemplate.spec.promotion): the run goes into service."
            )
        else:
            versus = (
                f"the model in service (run {current.run}) {_num(gate.champion_value)} "
                "on the same rows"
                if current is not None
                else "no model in service to compare with"
            )
            verdict = "[green]passed[/]" if passed else "[yellow]not passed[/]"
            self.say(
                f"Evaluation gate ({gate.metric}): this run {_num(gate.value)}, {versus} "
                f"-> {verdict}"
            )
            self.say(gate.message or "", markup=False)
        pinned = self.schedule.spec.pinned_run
        if passed and pinned:
            message = f"passed the gate; not put in service: spec.pinnedRun is {pinned}"
            done = done.model_copy(
                update={"reason": gate.reason if gate else None, "message": message}
            )
            self.say(message[0].upper() + message[1:], markup=False)
        elif passed:
            if current is not None and current.run != entry.name:
                status.previous = current
            status.in_service = ServedModel(run=entry.name, model=model, since=now_iso(self.now))
            message = f"run {entry.name}'s model {model} is in service" + (
                f" (gate: {gate.message})" if gate and gate.message else ""
            )
            done = done.model_copy(
                update={"promoted": True, "reason": "Promoted", "message": message}
            )
            self.say(f"Promoted: run {entry.name}'s model is in service", markup=False)
        else:
            assert gate is not None
            done = done.model_copy(
                update={"promoted": False, "reason": gate.reason, "message": gate.message}
            )
            stays = (
                f"run {current.run}'s model stays in service"
                if current
                else "nothing is in service yet"
            )
            self.say(f"Not promoted: {stays}", markup=False)
        record(status, done)
        status.last_successful_run = done

    def _pin(self, status: TrainingScheduleStatus, pinned: str) -> None:
        """spec.pinnedRun: that run's model is served, whatever the gate said since."""
        model = self.dir / pinned / "model"
        if (
            run_phase(self.dir, pinned, status) != "Succeeded"
            or not (model / "config.json").is_file()
        ):
            self.say(
                f"[yellow]spec.pinnedRun: {pinned} is not a succeeded run of this schedule here[/]"
            )
            return
        current = status.in_service
        if current is None or current.run != pinned:
            if current is not None:
                status.previous = current
            status.in_service = ServedModel(run=pinned, model=str(model), since=now_iso(self.now))

    def _prune(self, status: TrainingScheduleStatus) -> None:
        """Delete run directories beyond the history limits, as the operator prunes runs
        and their models (never the active run, nor the models in service and before)."""
        runs = [(n, run_phase(self.dir, n, status)) for n in runs_on_disk(self.dir)]
        for name in runs_to_prune(self.schedule, status, runs):
            if name == status.active_run:
                continue
            shutil.rmtree(self.dir / name, ignore_errors=True)
            self.say(f"Pruned run {name} and its model (history limit)", markup=False)

    def _show(self, status: TrainingScheduleStatus) -> None:
        """The schedule as the state file now has it: what serves, and the newest ticks."""
        table = Table(
            title=f"TrainingSchedule {self.name}", show_header=False, title_justify="left"
        )
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for label, served in (("in service", status.in_service), ("previous", status.previous)):
            if served is not None:
                table.add_row(label, f"{served.run} ({served.model})")
        if status.in_service is None:
            table.add_row("in service", "nothing yet")
        last = status.last_successful_run
        if last is not None:
            table.add_row("last successful run", last.name or "")
        table.add_row("state", str(self.state_path))
        self.console.print(table)
        # Compact (no box, no tick column: a run's name carries its tick) to fit 80 columns.
        history = Table(title="History (newest first)", title_justify="left", box=None)
        metric = next((e.metric for e in status.history if e.metric), None) or "value"
        for column in ("run (or tick)", "phase", "reason", metric, "champion"):
            history.add_column(column, overflow="fold")
        for entry in status.history[:HISTORY_SHOWN]:
            history.add_row(
                entry.name or f"({entry.scheduled_time})",
                entry.phase or "",
                entry.reason or "",
                _num(entry.value),
                _num(entry.champion_value),
            )
        self.console.print(history)
