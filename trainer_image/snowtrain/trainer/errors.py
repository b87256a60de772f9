"""Trainer errors and their exit codes (see README "Trainer contract").

Each error class maps to a sysexits-style exit code and a reason the operator copies into the
job's Failed condition, so a failure is classified by the program that understands it.
Messages must never contain a credential: they are printed, put in the termination message
and end up in the resource's status.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base class: an expected failure with a reason and an exit code."""

    reason = "InternalError"
    exit_code = 1


class InvalidConfig(TrainerError):
    """The config (or the spec it came from) cannot be trained as written."""

    reason = "InvalidSpec"
    exit_code = 64


class DataError(TrainerError):
    """The data is unusable: names the column and counts the bad rows."""

    reason = "DataError"
    exit_code = 65

    def __init__(self, message: str, *, column: str | None = None, bad_rows: int | None = None):
        super().__init__(message)
        self.column = column
        self.bad_rows = bad_rows


class Unavailable(TrainerError):
    """Snowflake (or another dependency) could not be reached after retries."""

    reason = "Unavailable"
    exit_code = 69


class Preempted(TrainerError):
    """SIGTERM arrived; a checkpoint was saved and a rerun resumes from it."""

    reason = "Preempted"
    exit_code = 75


EXIT_CODES = {
    cls.exit_code: cls.reason for cls in (InvalidConfig, DataError, Unavailable, Preempted)
}
