"""Run the trainer as a child process and follow its JSON progress lines (README: "The
trainer contract"; the events are the models of :mod:`snowtrain.api.events`).

This is the same channel the operator reads from a pod's log: one JSON object with an
``event`` field per stdout line, everything else log text, and the final summary in the
termination-message file. Local mode shows the lines as a rich progress bar, keeps them in
``events.jsonl`` (the loss curve spans resumed runs) and writes log text to ``trainer.log``.

The trainer runs in its own session so a Ctrl-C in the terminal reaches only the CLI, which
then sends SIGTERM: the trainer checkpoints and exits 75 (Preempted), and rerunning the same
command resumes -- the same path a preempted pod takes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from snowtrain.api.events import (
    DataEvent,
    DataLineage,
    DoneEvent,
    EvalEvent,
    ProgressEvent,
    RowsEvent,
    StartEvent,
    TrainerEvent,
    TrainerSummary,
    parse_event,
    parse_summary,
)
from snowtrain.trainer.allocator import with_preloaded_allocator


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _num(value: float | None, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


@dataclass
class TrainerOutcome:
    """How the trainer ended: its exit code and its final summary (done event or file)."""

    exit_code: int
    summary: TrainerSummary | None
    interrupted: bool = False
    resumed_from_step: int | None = None
    data: DataLineage | None = None


class ProgressView:
    """A progress bar with loss and ETA, plus one line per data/eval/resume event."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [cyan]{task.fields[loss]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(title, total=None, loss="-", eta="-:--")
        self.done: DoneEvent | None = None
        self.resumed_from_step: int | None = None
        self.data: DataEvent | None = None

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def handle(self, event: TrainerEvent) -> None:
        say = self.progress.console.print
        if isinstance(event, StartEvent):
            self.resumed_from_step = event.resumed_from_step
            self.progress.update(
                self.task, total=event.total_steps, completed=self.resumed_from_step or 0
            )
            if self.resumed_from_step:
                say(f"Resuming from the checkpoint at step {self.resumed_from_step}")
        elif isinstance(event, DataEvent):
            self.data = event
            labels = event.labels
            say(
                f"Data: {event.rows} training rows, {event.validation_rows} "
                f"validation rows" + (f", labels {', '.join(map(str, labels))}" if labels else "")
            )
        elif isinstance(event, ProgressEvent):
            self.progress.update(
                self.task,
                completed=event.step,
                total=event.total_steps or self.progress.tasks[0].total,
                loss=_num(event.loss),
                eta=format_eta(event.eta_seconds),
            )
        elif isinstance(event, RowsEvent):
            if event.resumed_from_row:
                say(f"Resuming after the {event.resumed_from_row} rows committed before")
            self.progress.update(
                self.task,
                completed=event.rows_done,
                total=event.rows_total,
                eta=format_eta(event.eta_seconds),
            )
        elif isinstance(event, EvalEvent):
            parts = [
                f"{name} {_num(value)}"
                for value, name in (
                    (event.eval_loss, "loss"),
                    (event.eval_accuracy, "accuracy"),
                    (event.eval_macro_f1, "macro-F1"),
                    (event.perplexity, "perplexity"),
                )
                if value is not None
            ]
            say(f"Eval at step {event.step}: " + ", ".join(parts))
        elif isinstance(event, DoneEvent):
            self.done = event


class ProcessPlan(Protocol):
    """What following a child needs of a plan: a training run's or a batch prediction's."""

    @property
    def run_dir(self) -> Path: ...
    @property
    def config_path(self) -> Path: ...
    @property
    def termination_path(self) -> Path: ...
    @property
    def log_path(self) -> Path: ...
    @property
    def events_path(self) -> Path: ...
    @property
    def name(self) -> str: ...
    def config_text(self) -> str: ...


def run_trainer(
    plan: ProcessPlan,
    extra_env: dict[str, str],
    console: Console,
    *,
    module: str = "snowtrain.trainer",
    title: str | None = None,
) -> TrainerOutcome:
    """Start ``python -m module`` (the trainer, or the predictor, which speaks the same
    protocol) on the plan's config and follow it to the end."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.config_path.write_text(plan.config_text() + "\n")
    plan.termination_path.unlink(missing_ok=True)
    env = {
        **with_preloaded_allocator(os.environ),
        **extra_env,
        "TERMINATION_MESSAGE_PATH": str(plan.termination_path),
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", module, "--config", str(plan.config_path)]
    interrupted = False
    with (
        open(plan.log_path, "a") as log,
        open(plan.events_path, "a") as events,
        ProgressView(console, title or f"Training {plan.name}") as view,
    ):
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        assert proc.stdout is not None

        def follow() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                event = parse_event(line)
                if event is None:
                    log.write(line)
                    log.flush()
                    continue
                events.write(event.to_json() + "\n")
                events.flush()
                view.handle(event)

        try:
            follow()
            proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            view.progress.console.print(
                "[yellow]Interrupted: the trainer is saving a checkpoint "
                "(press Ctrl-C again to kill it)"
            )
            proc.send_signal(signal.SIGTERM)
            try:
                follow()
                proc.wait()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
    summary = view.done or _read_summary(plan.termination_path)
    return TrainerOutcome(proc.returncode, summary, interrupted, view.resumed_from_step, view.data)


def _read_summary(path: Path) -> TrainerSummary | None:
    try:
        return parse_summary(path.read_text())
    except OSError:
        return None


def log_tail(plan: ProcessPlan, lines: int = 15) -> str:
    """The end of trainer.log, to show next to a failure."""
    try:
        text = plan.log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
