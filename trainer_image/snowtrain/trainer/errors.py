"""Trainer errors and their exit codes (README: "The trainer contract").

Each error class carries a sysexits-style exit code and the reason the operator copies into
the job's Failed condition (both from :mod:`snowtrain.api.events`, the one table of them), so
a failure is classified by the program that understands it.
Messages must never contain a credential: they are printed, put in the termination message
and end up in the resource's status.
"""

from __future__ import annotations

from snowtrain.api.events import EXIT_REASONS, ExitCode


class TrainerError(Exception):
    """Base class: an expected failure with a reason and an exit code."""

    exit_code = ExitCode.INTERNAL_ERROR
    reason = EXIT_REASONS[exit_code]


class InvalidConfig(TrainerError):
    """The config (or the spec it came from) cannot be trained as written."""

    exit_code = ExitCode.INVALID_SPEC
    reason = EXIT_REASONS[exit_code]


class DataError(TrainerError):
    """The data is unusable: names the column and counts the bad rows."""

    exit_code = ExitCode.DATA_ERROR
    reason = EXIT_REASONS[exit_code]

    def __init__(self, message: str, *, column: str | None = None, bad_rows: int | None = None):
        super().__init__(message)
        self.column = column
        self.bad_rows = bad_rows


class Unavailable(TrainerError):
    """Snowflake (or another dependency) could not be reached after retries."""

    exit_code = ExitCode.UNAVAILABLE
    reason = EXIT_REASONS[exit_code]


class Preempted(TrainerError):
    """SIGTERM arrived; a checkpoint was saved and a rerun resumes from it."""

    exit_code = ExitCode.PREEMPTED
    reason = EXIT_REASONS[exit_code]
