"""What a finished local run shows: the summary table and the loss curve PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from snowtrain.api.events import (
    ChampionEvaluation,
    EvalEvent,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
    parse_event,
)

#: Metric key (a ``snowtrain.api.events.TrainerMetrics`` field, as metrics.json and the
#: summary name it) -> label and format, in display order.
_METRICS = (
    ("trainLoss", "train loss", "{:.4f}"),
    ("evalLoss", "eval loss", "{:.4f}"),
    ("evalAccuracy", "eval accuracy", "{:.1%}"),
    ("evalMacroF1", "eval macro-F1", "{:.3f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("steps", "steps", "{}"),
    ("samplesPerSecond", "samples/s", "{:.1f}"),
    ("tokensPerSecond", "tokens/s", "{:,.0f}"),
    ("mfu", "MFU per GPU", "{:.1%}"),
    ("tokensTrained", "tokens trained", "{:,}"),
    ("trainSeconds", "train time", "{:.0f} s"),
)

#: The validation metrics, which the champion (an evaluation gate's) reports too.
_EVAL_METRICS = ("evalLoss", "evalAccuracy", "evalMacroF1", "perplexity")


def read_events(path: Path) -> list[TrainerEvent]:
    """The events of every attempt of this run, oldest first (bad lines skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [event for line in lines if (event := parse_event(line)) is not None]


def loss_history(
    events: list[TrainerEvent],
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train loss) and (step, eval loss) points of the attempt chain that made the model.

    A ``start`` event that resumed from step S supersedes what an interrupted attempt logged
    after S; a fresh start (no resume) supersedes everything before it.
    """
    train: list[tuple[int, float]] = []
    evals: list[tuple[int, float]] = []
    for ev in events:
        if isinstance(ev, StartEvent):
            keep = ev.resumed_from_step or 0
            train = [p for p in train if p[0] <= keep]
            evals = [p for p in evals if p[0] <= keep]
        elif isinstance(ev, ProgressEvent) and ev.loss is not None:
            train.append((ev.step, ev.loss))
        elif isinstance(ev, EvalEvent) and ev.eval_loss is not None:
            evals.append((ev.step, ev.eval_loss))
    return train, evals


def plot_loss_curve(events: list[TrainerEvent], out: Path, title: str) -> Path | None:
    """Write the loss curve PNG; None when there is nothing to plot."""
    train, evals = loss_history(events)
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), marker="." if len(train) < 30 else None, label="train")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", linestyle="--", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def summary_table(
    *,
    title: str,
    outcome: str,
    metrics: dict[str, Any],
    rows: Any,
    wall_seconds: float | None,
    model_dir: Path,
    loss_curve: Path | None,
    champion: ChampionEvaluation | None = None,
) -> Table:
    """The end-of-run table: outcome, metrics, data, wall time and where the model is; with
    an evaluation gate, the champion's metrics on the same validation rows under them."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths are copied from here: never cut them short
    table.add_row("outcome", outcome)
    for key, label, fmt in _METRICS:
        value = metrics.get(key)
        if isinstance(value, int | float):
            table.add_row(label, fmt.format(value))
    if champion is not None:
        _champion_rows(table, champion)
    if rows is not None:
        table.add_row("training rows", str(rows))
    if wall_seconds is not None:
        table.add_row("wall time", f"{wall_seconds:.0f} s")
    table.add_row("model", str(model_dir))
    if loss_curve:
        table.add_row("loss curve", str(loss_curve))
    return table


def _champion_rows(table: Table, champion: ChampionEvaluation) -> None:
    """The champion, its validation metrics, and why any is missing."""
    table.add_row("champion", champion.model or "")
    theirs = champion.metrics.to_wire() if champion.metrics is not None else {}
    for key, label, fmt in _METRICS:
        value = theirs.get(key)
        if key in _EVAL_METRICS and isinstance(value, int | float):
            table.add_row(f"champion {label}", fmt.format(value))
    if champion.problem:
        table.add_row("champion note" if theirs else "champion not evaluated", champion.problem)
