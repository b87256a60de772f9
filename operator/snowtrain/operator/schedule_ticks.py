"""When a TrainingSchedule's ticks fall: the cron expression read in its time zone.

Pure (no clock, no API): the reconcile passes ``now`` and the last tick it handled. Only the
newest tick that is due counts, as a CronJob does: an operator that was down for a day starts
one run, not one per missed tick; ``startingDeadlineSeconds`` says whether even that one is
too late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter


@dataclass(frozen=True)
class Ticks:
    """What the clock says at ``now``."""

    due: datetime | None
    """The newest tick after the last one handled and not after now (UTC), if any."""
    next: datetime
    """The first tick after now (UTC)."""
    late_seconds: float = 0.0
    """How long ago ``due`` fell."""


def ticks(expression: str, time_zone: str | None, since: datetime, now: datetime) -> Ticks:
    """The due tick in (``since``, ``now``] and the next one after ``now``.

    ``since`` is the last tick handled (or the schedule's creation): a tick at exactly that
    moment was handled already. Cron fields are matched in ``time_zone`` (UTC by default), so
    ``0 2 * * *`` in Europe/Berlin is 02:00 there in winter and summer alike; croniter moves
    a tick that falls into a DST gap to the gap's end.
    """
    zone = ZoneInfo(time_zone) if time_zone else UTC
    local_now = now.astimezone(zone)
    # get_prev is strictly before its start: one second past now makes a tick at now count.
    previous: datetime = croniter(expression, local_now + timedelta(seconds=1)).get_prev(datetime)
    upcoming: datetime = croniter(expression, local_now).get_next(datetime)
    due = previous.astimezone(UTC) if previous > since else None
    late = (now - due).total_seconds() if due else 0.0
    return Ticks(due=due, next=upcoming.astimezone(UTC), late_seconds=late)
