"""Maintenance windows (`spec.maintenanceWindow`), pure: when windows open and close, how long a hop takes.

A window is system-upgrade-controller's: `days`, `startTime`, `endTime` (wall-clock `HH:MM` in
`timeZone`); an end at or before the start closes the next day, and the window belongs to the day it
opens on. The clock (`now`) and the time zone (a `tzinfo` the engine looked up in the time zone database)
are inputs; nothing here reads either.

A hop starts only in a window, and only if it is expected to end before that window closes. A hop's
expected duration is the sum of its steps' estimates: each step kind takes as long as it took in an earlier
hop of this plan (the longest such step), else the default below; the servers upgraded after each
database's first run `maxConcurrentServers` at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from .enums import DONE_STATES, StepName, Weekday
from .hop_summary import longest_before
from .models import MaintenanceWindowSpec, StepStatus, UpgradePlanSpec, UpgradePlanStatus

# How long a step of each kind is expected to take, in seconds, until this plan has timed one.
DEFAULT_ESTIMATES: Mapping[StepName, float] = {
    StepName.DISABLE_REPLICATION: 30, StepName.TAKE_OUT_OF_ROTATION: 60, StepName.BACKUP_DATABASE: 600,
    StepName.INSTALL_FIRST_SERVER: 600, StepName.UPGRADE_SCHEMA: 600, StepName.VERIFY_SCHEMA: 30,
    StepName.INSTALL_SERVER: 600, StepName.HEALTH_CHECK: 60, StepName.BRING_INTO_ROTATION: 30,
    StepName.RESTORE_REPLICATION: 30, StepName.VERIFY_REPLICATION: 300, StepName.INSTALL_REPLACEMENT: 600,
}
OTHER_STEP_ESTIMATE = 60.0
LOOK_AHEAD_DAYS = 8  # every weekday, and the window of the day before that may still be open
_WEEKDAYS = tuple(Weekday)


@dataclass(frozen=True)
class Window:
    """One opening of the maintenance window (in UTC: arithmetic on wall times would miss a DST change)."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _at(day: date, clock: time, zone: tzinfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=zone)


def windows(window: MaintenanceWindowSpec, zone: tzinfo, now: datetime) -> Iterator[Window]:
    """The openings that have not closed by `now`, in order (those of the next `LOOK_AHEAD_DAYS`)."""
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    start, end = _clock(window.start_time), _clock(window.end_time)
    days = {_WEEKDAYS.index(d) for d in window.days}
    today = now.astimezone(zone).date()
    for offset in range(-1, LOOK_AHEAD_DAYS):
        day = today + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        opens = _at(day, start, zone)
        closes = _at(day + timedelta(days=1) if end <= start else day, end, zone)
        if closes > now:
            yield Window(opens.astimezone(UTC), closes.astimezone(UTC))


def step_estimate(status: UpgradePlanStatus, step: StepStatus) -> float:
    measured = longest_before(status, step.name, step.hop)
    return measured if measured is not None else float(DEFAULT_ESTIMATES.get(step.name, OTHER_STEP_ESTIMATE))


def hop_estimate(spec: UpgradePlanSpec, status: UpgradePlanStatus, hop: int) -> float:
    """Seconds hop `hop` is expected to take (its forward steps not yet done)."""
    steps = [s for s in status.steps if s.hop == hop and not s.name.undoes and s.state not in DONE_STATES]
    grouped = [s for s in steps if s.name in (StepName.INSTALL_SERVER, StepName.HEALTH_CHECK)]
    servers = {s.server for s in grouped if s.name is StepName.INSTALL_SERVER}
    alone = sum(step_estimate(status, s) for s in steps if s not in grouped or s.server not in servers)
    per_server = sum(step_estimate(status, s) for s in grouped if s.server in servers) / max(len(servers), 1)
    rounds = math.ceil(len(servers) / spec.max_concurrent_servers)
    return alone + per_server * rounds


@dataclass(frozen=True)
class Fit:
    """Whether a hop of `seconds` may start now: `open` is the window it would run in (None: now is
    outside every window, or what is left of it is too short), `next_start` the next opening it fits in."""

    seconds: float
    open: Window | None
    next_start: datetime | None
    longest: float  # the longest window, in seconds
    inside: bool  # now is inside a window (which the hop may not fit in)


def fit(window: MaintenanceWindowSpec, zone: tzinfo, now: datetime, seconds: float) -> Fit:
    openings = list(windows(window, zone, now))
    current = next((w for w in openings if w.start <= now < w.end), None)
    fits_now = current is not None and now + timedelta(seconds=seconds) <= current.end
    later = next((w.start for w in openings if w.start > now and w.seconds >= seconds), None)
    longest = max((w.seconds for w in openings), default=0.0)
    return Fit(seconds, current if fits_now else None, later, longest, current is not None)
