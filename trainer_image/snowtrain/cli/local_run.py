"""``snowtrain run``: one job YAML, end to end, on this machine.

The steps mirror the operator's: validate (same API), render the trainer config (same
function), provide Snowflake (the user's, or the embedded emulator), run the trainer (same
program, followed through its progress lines), then serve the model (same server). Only the
edges differ: directories instead of volumes, child processes instead of pods.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from snowtrain.api import AnyJob
from snowtrain.api.events import ChampionEvaluation, ExitCode, TrainerSummary
from snowtrain.api.identifiers import IDENTIFIER_PART, InvalidIdentifier, canonical_column
from snowtrain.api.promotion import verdict
from snowtrain.api.spec import ServingSpec

from . import credentials, emulator
from .errors import UserError
from .manifest import load_job
from .plan import RunPlan, check_resumable, is_complete, plan_run
from .report import plot_loss_curve, read_events, summary_table
from .serving import ModelServer, demo_request, free_port, model_task, port_is_free
from .trainer_process import log_tail, run_trainer

DEFAULT_PORT = 8080


def _identifier(value: str, field: str) -> str:
    try:
        return canonical_column(value)
    except InvalidIdentifier as exc:
        raise UserError(f"{field}: {exc}") from None


def emulator_location(job: AnyJob) -> tuple[str, str]:
    """The database and schema the job reads, where the emulator puts the example tables.

    A qualified table name (``DB.SCHEMA.TABLE``) wins over the connection settings, as it does
    in Snowflake; unset parts default to SNOWTRAIN.PUBLIC.
    """
    conn = job.spec.data.snowflake
    database = conn.database and _identifier(conn.database, "spec.data.snowflake.database")
    schema = conn.schema_ and _identifier(conn.schema_, "spec.data.snowflake.schema")
    table = job.spec.data.table
    if table:
        parts = [canonical_column(p) for p in re.findall(IDENTIFIER_PART, table)]
        if len(parts) == 3:
            database, schema = parts[0], parts[1]
        elif len(parts) == 2:
            schema = parts[0]
    return database or emulator.DEFAULT_DATABASE, schema or emulator.DEFAULT_SCHEMA


class LocalRun:
    """The ``run`` command; ``run()`` returns the process exit code.

    Its steps (``snowflake_env``, ``train``, ``report``, ``serve``) are public because a
    TrainingSchedule's tick (:mod:`.local_schedule`) runs the same ones on each run it
    creates, between its own (the data probe, the gate, the model in service).
    """

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console

    def say(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)

    # -- steps --------------------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        job = load_job(args.file)
        plan = plan_run(job, yaml_path=args.file, output=args.output, max_steps=args.max_steps)
        serve = self.wants_serving(job.spec.serving)
        port = self.serving_port(job.spec.serving) if serve else None
        self.say(
            f"[bold]{job.kind} {job.metadata.name}[/] ({job.task}) -> {plan.run_dir}",
        )
        if plan.base_model_note:
            self.say(f"Base model: {plan.base_model_note}", markup=False)
        if args.fresh:
            self._clear(plan)
        else:
            check_resumable(plan)

        started = time.monotonic()
        champion: ChampionEvaluation | None = None
        if is_complete(plan):
            self.say(
                f"Already trained: {plan.model_dir} (rerun with --fresh to train again)",
                markup=False,
            )
            outcome, metrics, rows = "Succeeded", self._read_metrics(plan), None
        else:
            with ExitStack() as stack:
                env = self.snowflake_env(plan.job, plan.run_dir, stack)
                code, summary, rows = self.train(plan, env)
            if code != 0:
                return code
            outcome = summary.outcome if summary else "Succeeded"
            metrics = summary.metrics.to_wire() if summary else {}
            champion = summary.champion if summary else None
        self.report(plan, outcome, metrics, rows, time.monotonic() - started, champion)
        promotion = job.spec.promotion
        if promotion is not None:  # the evaluation gate, as the operator applies it
            gate = verdict(promotion, metrics, champion)
            self.say(f"Evaluation gate: {gate.reason}: {gate.message}", markup=False)
            if not gate.promoted:
                self.say("Not served: the model did not clear spec.promotion.", markup=False)
                return 0
        if not serve:
            self.say(
                f"Serve it with: python -m snowtrain.serve --model-dir {plan.model_dir}",
                markup=False,
            )
            return 0
        assert port is not None
        return self.serve(plan.model_dir, plan.job.metadata.name or "model", plan.run_dir, port)

    def report(
        self,
        plan: RunPlan,
        outcome: str,
        metrics: dict[str, Any],
        rows: int | None,
        wall_seconds: float | None,
        champion: ChampionEvaluation | None,
    ) -> None:
        """The loss curve PNG next to the model, and the summary table."""
        job = plan.job
        curve = plot_loss_curve(
            read_events(plan.events_path), plan.model_dir / "loss_curve.png", f"{job.metadata.name}"
        )
        self.console.print(
            summary_table(
                title=f"{job.kind} {job.metadata.name}",
                outcome=outcome,
                metrics=metrics or self._read_metrics(plan),
                rows=rows,
                wall_seconds=wall_seconds,
                model_dir=plan.model_dir,
                loss_curve=curve,
                champion=champion,
            )
        )

    def wants_serving(self, serving: ServingSpec | None) -> bool:
        """--serve / --no-serve, else what the resource's serving block says."""
        if self.args.serve is not None:
            serve = bool(self.args.serve)
        else:
            serve = serving is not None and serving.enabled
        if self.args.demo and not serve:
            raise UserError(
                "--demo sends a prediction to the served model; drop --no-serve "
                "(or add --serve when spec.serving is not set)"
            )
        return serve

    def serving_port(self, serving: ServingSpec | None) -> int:
        """Checked before training, so a busy port does not surface only after it."""
        if self.args.port is not None:
            if not port_is_free(self.args.port):
                raise UserError(f"--port {self.args.port}: the port is in use")
            return int(self.args.port)
        port = serving.port if serving else DEFAULT_PORT
        if port_is_free(port):
            return port
        chosen = free_port()
        self.say(f"Port {port} is in use; serving on {chosen} instead (choose with --port)")
        return chosen

    def _clear(self, plan: RunPlan) -> None:
        for path in (plan.checkpoint_dir, plan.model_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (plan.events_path, plan.config_path, plan.termination_path):
            path.unlink(missing_ok=True)

    @staticmethod
    def _read_metrics(plan: RunPlan) -> dict[str, Any]:
        try:
            return json.loads((plan.model_dir / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def snowflake_env(self, job: AnyJob, log_dir: Path, stack: ExitStack) -> dict[str, str]:
        """The Snowflake the run reads, as the trainer's extra environment: the user's
        (``--snowflake``, ``--connection``), or the embedded emulator, started here and
        stopped when ``stack`` closes (its log in ``log_dir``)."""
        target = credentials.resolve(self.args.snowflake, self.args.connection)
        if target.mode == "embedded":
            return self._start_emulator(job, target, log_dir, stack)
        self.say(f"Snowflake: {target.description}", markup=False)
        return target.env

    def train(
        self, plan: RunPlan, env: dict[str, str]
    ) -> tuple[int, TrainerSummary | None, int | None]:
        """Run the trainer on ``plan`` against the Snowflake of ``env``: (exit code, its
        summary, training rows); a failure or a stop is explained here."""
        outcome = run_trainer(plan, env, self.console)
        summary = outcome.summary
        lineage = (summary.data if summary else None) or outcome.data
        rows = lineage.rows if lineage else None
        if outcome.interrupted or outcome.exit_code == ExitCode.PREEMPTED:
            step = summary.step if summary else None
            self.say(
                f"[yellow]Stopped{f' at step {step}' if step else ''}.[/] Run the same command "
                "again to resume from the last checkpoint."
            )
            return (130 if outcome.interrupted else ExitCode.PREEMPTED), summary, rows
        if outcome.exit_code != 0:
            reason = (summary.reason if summary else None) or "Failed"
            message = (summary.message if summary else None) or "the trainer failed"
            self.say(f"[red]Training failed ({reason}, exit code {outcome.exit_code}):[/]")
            self.say(message, markup=False)
            # Classified failures (DataError, InvalidSpec, Unavailable) carry a message meant for
            # the user; only an internal error needs the log to be understood.
            tail = log_tail(plan) if reason in ("InternalError", "Failed") else ""
            if tail:
                self.say(f"Last lines of {plan.log_path}:", markup=False)
                self.say(tail, markup=False, style="dim")
            return outcome.exit_code, summary, rows
        return 0, summary, rows

    def _start_emulator(
        self, job: AnyJob, target: credentials.SnowflakeTarget, log_dir: Path, stack: ExitStack
    ) -> dict[str, str]:
        database, schema = emulator_location(job)
        self.say(f"Snowflake: {target.description}.", markup=False)
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.console.status("Starting the embedded Snowflake emulator (fakesnow)..."):
            emu = stack.enter_context(
                emulator.start(database, schema, log_path=log_dir / "emulator.log")
            )
        tables = ", ".join(f"{t} ({n} rows)" for t, n in emu.tables.items())
        self.say(
            f"Embedded Snowflake on 127.0.0.1:{emu.port}, {database}.{schema}: {tables}",
            markup=False,
        )
        table = job.spec.data.table
        if table and canonical_column(table.split(".")[-1]) not in emu.tables:
            self.say(
                f"[yellow]Note:[/] spec.data.table {table} is not one of the example tables; "
                "configure Snowflake credentials to read your own data."
            )
        return emu.env

    def serve(self, model_dir: Path, name: str, log_dir: Path, port: int) -> int:
        """Serve ``model_dir`` as ``name`` until Ctrl-C (with --demo: one request, then stop)."""
        server = ModelServer(model_dir, name, port, log_dir / "server.log")
        with self.console.status(f"Starting the model server on port {port}..."):
            server.start()
        try:
            req = demo_request(model_task(model_dir), name)
            self.say(f"Model: {model_dir}", markup=False)
            self.say(f"Serving {name} at {server.base_url}  (log: {server.log_path})", markup=False)
            self.say("Try it:")
            self.say(req.curl(server.base_url), markup=False, soft_wrap=True)
            if self.args.demo:
                self.say("Demo request:", markup=False)
                self.say(json.dumps(req.body), markup=False, soft_wrap=True)
                self.console.print_json(data=server.request(req))
                return 0
            self.say("Press Ctrl-C to stop the server.")
            try:
                return server.wait()
            except KeyboardInterrupt:
                return 0
        finally:
            server.stop()
