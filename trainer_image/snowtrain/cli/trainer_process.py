"""Run the trainer as a child process and follow its JSON progress lines (contracts §2).

This is the same channel the operator reads from a pod's log: one JSON object with an
``event`` field per stdout line, everything else log text, and the final summary in the
termination-message file. Local mode shows the lines as a rich progress bar, keeps them in
``events.jsonl`` (the loss curve spans resumed runs) and writes log text to ``trainer.log``.

The trainer runs in its own session so a Ctrl-C in the terminal reaches only the CLI, which
then sends SIGTERM: the trainer checkpoints and exits 75 (Preempted), and rerunning the same
command resumes -- the same path a preempted pod takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

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

from snowtrain.trainer.allocator import with_preloaded_allocator

from .plan import RunPlan

#: sysexits code the trainer uses after SIGTERM (checkpoint saved, rerun resumes).
EXIT_PREEMPTED = 75


def parse_event(line: str) -> dict[str, Any] | None:
    """The event object on a stdout line, or None for ordinary log text."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("event"), str) else None


def format_eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


@dataclass
class TrainerOutcome:
    """How the trainer ended: its exit code and its final summary (done event or file)."""

    exit_code: int
    summary: dict[str, Any] | None
    interrupted: bool = False
    resumed_from_step: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


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
        self.done: dict[str, Any] | None = None
        self.resumed_from_step: int | None = None
        self.data: dict[str, Any] = {}

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        say = self.progress.console.print
        if kind == "start":
            self.resumed_from_step = event.get("resumedFromStep")
            self.progress.update(
                self.task, total=event.get("totalSteps"), completed=self.resumed_from_step or 0
            )
            if self.resumed_from_step:
                say(f"Resuming from the checkpoint at step {self.resumed_from_step}")
        elif kind == "data":
            self.data = event
            labels = event.get("labels")
            say(
                f"Data: {event.get('rows')} training rows, {event.get('validationRows')} "
                f"validation rows" + (f", labels {', '.join(map(str, labels))}" if labels else "")
            )
        elif kind == "progress":
            self.progress.update(
                self.task,
                completed=event.get("step", 0),
                total=event.get("totalSteps") or self.progress.tasks[0].total,
                loss=_num(event.get("loss")),
                eta=format_eta(event.get("etaSeconds")),
            )
        elif kind == "eval":
            parts = [
                f"{name} {_num(event.get(key))}"
                for key, name in (
                    ("evalLoss", "loss"),
                    ("evalAccuracy", "accuracy"),
                    ("evalMacroF1", "macro-F1"),
                    ("perplexity", "perplexity"),
                )
                if event.get(key) is not None
            ]
            say(f"Eval at step {event.get('step')}: " + ", ".join(parts))
        elif kind == "done":
            self.done = event


def run_trainer(plan: RunPlan, extra_env: dict[str, str], console: Console) -> TrainerOutcome:
    """Start ``python -m snowtrain.trainer`` on the plan's config and follow it to the end."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.config_path.write_text(plan.config.dumps() + "\n")
    plan.termination_path.unlink(missing_ok=True)
    env = {
        **with_preloaded_allocator(os.environ),
        **extra_env,
        "TERMINATION_MESSAGE_PATH": str(plan.termination_path),
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", "snowtrain.trainer", "--config", str(plan.config_path)]
    interrupted = False
    with (
        open(plan.log_path, "a") as log,
        open(plan.events_path, "a") as events,
        ProgressView(console, f"Training {plan.job.metadata.name}") as view,
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
                events.write(json.dumps(event) + "\n")
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
    summary = view.done or _read_json(plan.termination_path)
    return TrainerOutcome(proc.returncode, summary, interrupted, view.resumed_from_step, view.data)


def _read_json(path: Any) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def log_tail(plan: RunPlan, lines: int = 15) -> str:
    """The end of trainer.log, to show next to a failure."""
    try:
        text = plan.log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
