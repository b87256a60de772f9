"""Progress events on stdout and the final termination message (contracts §2).

The operator (and local mode) read the trainer through exactly two channels: JSON lines with
an ``event`` field on stdout, and one JSON summary in the container's termination-message
file. Everything else on stdout/stderr is ordinary log text.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .redact import Redactor

#: Kubernetes truncates termination messages beyond 4096 bytes.
TERMINATION_LIMIT = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


def now_iso() -> str:
    """UTC timestamp with a Z suffix, as Kubernetes writes them."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: report them as null instead of writing invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class Reporter:
    """Writes progress events; only rank 0 of a distributed run reports (``enabled``)."""

    def __init__(
        self,
        interval_seconds: float = 5.0,
        *,
        enabled: bool = True,
        redactor: Redactor | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.enabled = enabled
        self.redactor = redactor or Redactor()
        self._clock = clock
        self._last_progress: float | None = None

    def event(self, name: str, **fields: Any) -> None:
        """Print one ``{"event": name, ...}`` line (flushed: the reader follows it live)."""
        if not self.enabled:
            return
        line = json.dumps({"event": name, **_clean(fields)}, separators=(",", ":"))
        sys.stdout.write(self.redactor(line) + "\n")
        sys.stdout.flush()

    def due(self) -> bool:
        """Would a progress event be written now (cheap: callers skip GPU syncs otherwise)?"""
        last = self._last_progress
        return last is None or self._clock() - last >= self.interval_seconds

    def progress(self, *, force: bool = False, **fields: Any) -> bool:
        """A progress event, at most one per interval unless ``force`` (the last step)."""
        now = self._clock()
        due = self._last_progress is None or now - self._last_progress >= self.interval_seconds
        if not (force or due):
            return False
        self._last_progress = now
        self.event("progress", **fields, time=now_iso())
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


def encode_summary(summary: dict[str, Any], redactor: Redactor) -> str:
    """JSON of the summary, scrubbed and cut to fit 4096 bytes by shortening the message."""
    summary = _clean(dict(summary))
    text = redactor(json.dumps(summary, separators=(",", ":")))
    while len(text.encode()) > TERMINATION_LIMIT:
        message = summary.get("message") or ""
        if len(message) > 64:
            summary["message"] = message[: len(message) // 2] + "..."
        elif summary.get("metrics"):
            summary["metrics"] = {}
        else:
            summary = {k: summary.get(k) for k in ("outcome", "reason", "exitCode", "step")}
        text = redactor(json.dumps(summary, separators=(",", ":")))
    return text


def write_termination_message(summary: dict[str, Any], redactor: Redactor) -> None:
    """Best effort: a missing or read-only file must not turn success into failure."""
    path = termination_path()
    if path is None:
        return
    try:
        path.write_text(encode_summary(summary, redactor))
    except OSError as exc:
        print(f"could not write termination message to {path}: {exc}", file=sys.stderr)
