"""Progress events on stdout and the final termination message (README: "The trainer
contract").

The operator (and local mode) read the trainer through exactly two channels: JSON lines with
an ``event`` field on stdout, and one JSON summary in the container's termination-message
file. Everything else on stdout/stderr is ordinary log text. Both are the models of
:mod:`snowtrain.api.events`, which the readers parse with.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from snowtrain.api.events import TrainerSummary, build_event, now_iso

from .redact import Redactor

log = logging.getLogger(__name__)

#: Kubernetes truncates termination messages beyond 4096 bytes.
TERMINATION_LIMIT = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


class Reporter:
    """Writes progress events; only rank 0 of a distributed run reports (``enabled``)."""

    def __init__(
        self,
        interval_seconds: float = 5.0,
        *,
        enabled: bool = True,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.enabled = enabled
        self.redactor = redactor or Redactor()
        self._clock = clock
        self._last_progress: float | None = None

    def event(self, name: str, **fields: object) -> None:
        """Print one ``{"event": name, ...}`` line (flushed: the reader follows it live).
        A field the event model does not declare is a bug here, not something to print."""
        if not self.enabled:
            return
        try:
            line = build_event(name, **fields).to_json()
        except ValueError as exc:
            # A bug on this side, which the test suite turns into a failure
            # ($SNOWTRAIN_STRICT_EVENTS); a user's run must not fail for it. Readers will
            # see the line as log text.
            if os.environ.get("SNOWTRAIN_STRICT_EVENTS") == "1":
                raise
            log.error("%s", exc)
            line = json.dumps({"event": name, **fields}, default=str)
        sys.stdout.write(self.redactor(line) + "\n")
        sys.stdout.flush()

    def due(self) -> bool:
        """Would a progress event be written now (cheap: callers skip GPU syncs otherwise)?"""
        last = self._last_progress
        return last is None or self._clock() - last >= self.interval_seconds

    def progress(self, *, force: bool = False, **fields: object) -> bool:
        """A progress event, at most one per interval unless ``force`` (the last step)."""
        return self.periodic("progress", force=force, **fields)

    def periodic(self, name: str, *, force: bool = False, **fields: object) -> bool:
        """The event ``name`` with a ``time``, at most one such periodic event per interval
        unless ``force``; returns whether it was written."""
        now = self._clock()
        due = self._last_progress is None or now - self._last_progress >= self.interval_seconds
        if not (force or due):
            return False
        self._last_progress = now
        self.event(name, **fields, time=now_iso())
        return True


def termination_path() -> Path | None:
    """$TERMINATION_MESSAGE_PATH, else /dev/termination-log when writable, else None."""
    explicit = os.environ.get("TERMINATION_MESSAGE_PATH")
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_TERMINATION_PATH)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def encode_summary(summary: TrainerSummary, redactor: Redactor) -> str:
    """JSON of the summary, scrubbed and cut to fit 4096 bytes: the message is shortened
    first, then the metrics go, then everything but outcome, reason, exit code and step."""
    text = redactor(summary.to_json())
    while len(text.encode()) > TERMINATION_LIMIT:
        message = summary.message or ""
        if len(message) > 64:
            summary = summary.model_copy(update={"message": message[: len(message) // 2] + "..."})
        elif summary.metrics.model_fields_set:
            summary = summary.model_copy(update={"metrics": type(summary.metrics)()})
        else:
            summary = TrainerSummary(
                outcome=summary.outcome,
                reason=summary.reason,
                exit_code=summary.exit_code,
                step=summary.step,
            )
        text = redactor(summary.to_json())
    return text


def write_termination_message(summary: TrainerSummary, redactor: Redactor) -> None:
    """Best effort: a missing or read-only file must not turn success into failure."""
    path = termination_path()
    if path is None:
        return
    try:
        path.write_text(encode_summary(summary, redactor))
    except OSError as exc:
        print(f"could not write termination message to {path}: {exc}", file=sys.stderr)


def failure_of(exc: Exception) -> tuple[str, str, int]:
    """(reason, message, exit code) of the exception that ended a run: a TrainerError
    (an expected failure) says its own, logged in one line; anything else is an internal
    error, its traceback on stderr for whoever reads the pod's log."""
    from .errors import TrainerError

    if isinstance(exc, TrainerError):
        log.error("%s: %s", exc.reason, exc)
        return exc.reason, str(exc), exc.exit_code
    traceback.print_exc()
    return TrainerError.reason, f"{type(exc).__name__}: {exc}", TrainerError.exit_code


def conclude(summary: TrainerSummary, redactor: Redactor, reporter: Reporter | None = None) -> None:
    """A run's last word, on both channels its readers take it from: the ``done`` event on
    stdout and the termination message."""
    (reporter or Reporter()).event("done", **summary.model_dump(exclude_none=True))
    write_termination_message(summary, redactor)
