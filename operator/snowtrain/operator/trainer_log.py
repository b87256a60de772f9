"""The trainer's newest events, picked out of a pod's log tail.

The operator reads at most a few hundred log lines per refresh; what it needs from them is
the newest event of each kind (:mod:`snowtrain.api.events` parses each line).
"""

from __future__ import annotations

from dataclasses import dataclass

from snowtrain.api.events import (
    CheckpointEvent,
    DataEvent,
    DoneEvent,
    EvalEvent,
    ProgressEvent,
    RowsEvent,
    StartEvent,
    parse_event,
)


@dataclass
class TrainerReport:
    """The newest trainer event of each kind found in a log tail."""

    start: StartEvent | None = None
    data: DataEvent | None = None
    progress: ProgressEvent | None = None
    rows: RowsEvent | None = None
    eval: EvalEvent | None = None
    checkpoint: CheckpointEvent | None = None
    done: DoneEvent | None = None

    @property
    def has_events(self) -> bool:
        """Any event at all: the log is rank 0's (the other ranks write none)."""
        return any(vars(self).values())


def parse_trainer_lines(text: str) -> TrainerReport:
    """The newest event of each kind in ``text``; other lines are ordinary log text."""
    report = TrainerReport()
    for line in text.splitlines():
        event = parse_event(line)
        if event is not None:
            setattr(report, event.event, event)
    return report
