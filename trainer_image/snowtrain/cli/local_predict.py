"""``snowtrain run batch.yaml``: a BatchPrediction on this machine.

The steps mirror the operator's: validate (same API), resolve the model (a path, or the
model a ``snowtrain run`` of the referenced job left in its run directory), render the
predictor config (same function as the ConfigMap's), provide Snowflake (the user's, or the
embedded emulator with the example tables), run ``python -m snowtrain.predict`` (same
program, followed through its ``rows`` lines), then show a few rows of the output table.

Run directory (default ``./snowtrain-runs/batchprediction/<name>``): ``predictor-config.json``,
``predictor.log``, ``events.jsonl``, ``termination.json``. The run id comes from the spec, so
running the same file again after an interruption goes on from the committed rows (against
the same Snowflake), and after a success finds its rows written and stops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.events import ExitCode
from snowtrain.api.predictor_config import PredictorConfig, render_predictor_config

from . import credentials, emulator
from .errors import UserError
from .plan import DEFAULT_RUNS_ROOT
from .trainer_process import log_tail, run_trainer

#: Rows of the output table shown at the end.
SAMPLE_ROWS = 5
#: Columns the sample leaves out (long, and the same on every row of the run).
HIDDEN_COLUMNS = frozenset({"SCORES", "MODEL", "RUN_ID", "PREDICTED_AT"})


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class PredictionPlan:
    """Everything a local BatchPrediction needs before the predictor starts."""

    job: BatchPrediction
    run_dir: Path
    config: PredictorConfig

    @property
    def name(self) -> str:
        return self.job.metadata.name or "prediction"

    def config_text(self) -> str:
        return self.config.dumps()

    @property
    def config_path(self) -> Path:
        return self.run_dir / "predictor-config.json"

    @property
    def events_path(self) -> Path:
        return self.run_dir / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "predictor.log"

    @property
    def termination_path(self) -> Path:
        return self.run_dir / "termination.json"


def local_model(job: BatchPrediction, yaml_dir: Path, runs_root: Path) -> tuple[Path, str]:
    """(the model directory, what the MODEL column says) on this machine."""
    model = job.spec.model
    if model.uri:
        if model.uri.startswith("pvc://"):
            raise UserError(
                "spec.model.uri: a pvc:// claim exists on a cluster only; locally give a "
                "path, or a fineTuneJobRef / pretrainJobRef to a job run here"
            )
        path = (yaml_dir / model.uri).resolve() if model.uri.startswith(".") else Path(model.uri)
        name = model.uri
    else:
        ref = model.fine_tune_job_ref or model.pretrain_job_ref
        assert ref is not None
        kind = "FineTuneJob" if model.fine_tune_job_ref else "PretrainJob"
        path = (runs_root / kind.lower() / ref.name / "model").resolve()
        name = f"{kind}/{ref.name}"
        if not (path / "config.json").is_file():
            raise UserError(
                f"spec.model: {kind} {ref.name} has no model here yet (looked in {path}); "
                f"train it first with `snowtrain run` on its YAML"
            )
    if not (path / "config.json").is_file():
        raise UserError(f"spec.model.uri: {path} is not a model directory (no config.json)")
    return path, name


def plan_prediction(
    job: BatchPrediction, *, yaml_path: Path, output: Path | None = None
) -> PredictionPlan:
    runs_root = DEFAULT_RUNS_ROOT.resolve()
    name = job.metadata.name or "prediction"
    run_dir = (output or runs_root / "batchprediction" / name).resolve()
    model_dir, model_name = local_model(job, yaml_path.resolve().parent, runs_root)
    spec = json.dumps(job.spec.to_wire(), sort_keys=True)
    run_id = f"local/{name}/{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    config = render_predictor_config(
        job, run_id=run_id, model_dir=str(model_dir), model_name=model_name
    )
    return PredictionPlan(job, run_dir, config)


class LocalPrediction:
    """``snowtrain run`` of a BatchPrediction; ``run()`` returns the process exit code."""

    def __init__(self, args: argparse.Namespace, console: Console, job: BatchPrediction) -> None:
        self.args = args
        self.console = console
        self.job = job

    def run(self) -> int:
        plan = plan_prediction(self.job, yaml_path=self.args.file, output=self.args.output)
        say = self.console.print
        out = self.job.spec.output
        say(f"[bold]BatchPrediction {plan.name}[/] -> {out.table} ({out.mode})")
        say(f"Model: {plan.config.model_dir}", markup=False)
        target = credentials.resolve(self.args.snowflake, self.args.connection)
        started = time.monotonic()
        with ExitStack() as stack:
            env = target.env
            if target.mode == "embedded":
                env = self._start_emulator(plan, stack)
            else:
                say(f"Snowflake: {target.description}", markup=False)
            outcome = run_trainer(
                plan, env, self.console, module="snowtrain.predict", title=f"Predicting {plan.name}"
            )
            summary = outcome.summary
            if outcome.interrupted or outcome.exit_code != 0:
                return self._failed(plan, outcome.exit_code, outcome.interrupted, summary)
            counts = summary.predictions if summary else None
            wall = time.monotonic() - started
            table = Table(title=f"BatchPrediction {plan.name}", show_header=False)
            table.add_row("outcome", "Succeeded")
            table.add_row("rows", str(counts.rows_done if counts else "-"))
            if counts and counts.failed_rows:
                table.add_row("rows the model could not take", str(counts.failed_rows))
            table.add_row("output table", f"{out.table} ({out.mode})")
            table.add_row("run id", plan.config.run_id)
            table.add_row("wall time", f"{wall:.1f} s")
            self.console.print(table)
            self._show_sample(plan, env)
            if target.mode == "embedded":
                say(
                    "The embedded emulator's tables go away when this command ends; configure "
                    "Snowflake credentials to keep the output.",
                    style="dim",
                )
        return 0

    def _failed(self, plan: PredictionPlan, code: int, interrupted: bool, summary: Any) -> int:
        if interrupted or code == ExitCode.PREEMPTED:
            self.console.print(
                "[yellow]Stopped.[/] Run the same command again to go on from the committed rows."
            )
            return 130 if interrupted else int(ExitCode.PREEMPTED)
        reason = (summary.reason if summary else None) or "Failed"
        message = (summary.message if summary else None) or "the predictor failed"
        self.console.print(f"[red]Prediction failed ({reason}, exit code {code}):[/]")
        self.console.print(message, markup=False)
        tail = log_tail(plan) if reason in ("InternalError", "Failed") else ""
        if tail:
            self.console.print(f"Last lines of {plan.log_path}:", markup=False)
            self.console.print(tail, markup=False, style="dim")
        return code

    def _start_emulator(self, plan: PredictionPlan, stack: ExitStack) -> dict[str, str]:
        conn = self.job.spec.input.snowflake
        database = conn.database or emulator.DEFAULT_DATABASE
        schema = conn.schema_ or emulator.DEFAULT_SCHEMA
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        with self.console.status("Starting the embedded Snowflake emulator (fakesnow)..."):
            emu = stack.enter_context(
                emulator.start(database, schema, log_path=plan.run_dir / "emulator.log")
            )
        tables = ", ".join(f"{t} ({n} rows)" for t, n in emu.tables.items())
        self.console.print(
            f"Embedded Snowflake on 127.0.0.1:{emu.port}, {database}.{schema}: {tables}",
            markup=False,
        )
        return emu.env

    def _show_sample(self, plan: PredictionPlan, env: dict[str, str]) -> None:
        """The first rows of the output table, by key, read with the predictor's settings."""
        from snowtrain.trainer.data.connection import connect
        from snowtrain.trainer.data.credentials import load_credentials
        from snowtrain.trainer.data.sql import table_ref

        settings = plan.config.input.snowflake
        try:
            conn = connect(settings, load_credentials(settings, {**os.environ, **env}))
        except Exception as exc:  # the run succeeded; a sample is a courtesy
            self.console.print(f"(could not read the output table back: {exc})", style="dim")
            return
        try:
            keys = [f'"{k}"' for k in plan.config.input.key_columns]
            # The answer columns of either kind of model, whichever the table has.
            cur = conn.cursor()
            cur.execute(
                f"SELECT * FROM {table_ref(plan.config.output.table)} "
                f"ORDER BY {', '.join(keys)} LIMIT ?",
                (SAMPLE_ROWS,),
            )
            names = [d[0] for d in cur.description]
            shown = [i for i, n in enumerate(names) if n not in HIDDEN_COLUMNS]
            table = Table(title=f"{plan.config.output.table}: the first {SAMPLE_ROWS} rows")
            for i in shown:
                table.add_column(names[i], overflow="fold")
            for row in cur.fetchall():
                table.add_row(*(_cell(row[i]) for i in shown))
            self.console.print(table)
        finally:
            conn.close()
