"""The loop's own clocks: how long each step has run (on this process's monotonic clock) and the backoff
after a failed turn.

A step's `startedAt` in the status may have been written by another pod whose clock differs from ours;
comparing it with our `now` makes a skewed step time out early or never. So each process times the
Running steps itself, from the moment it first saw each one running, and the core's timeouts read those
times (`Observations.running_for`). A restarted operator, or a standby that takes over, starts its timers
afresh: a step can then only be given longer than its timeout, never less.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..core.enums import StepState
from ..core.models import StepKey, UpgradePlanStatus


@dataclass
class StepTimers:
    """When this process first saw each step Running (monotonic seconds)."""

    clock: Callable[[], float] = time.monotonic
    first_seen: dict[StepKey, float] = field(default_factory=dict)

    def running_for(self, status: UpgradePlanStatus) -> Mapping[StepKey, float]:
        """Seconds each Running step of `status` has been running as far as this process knows."""
        now = self.clock()
        running = {s.key for s in status.steps if s.state is StepState.RUNNING}
        for key in [k for k in self.first_seen if k not in running]:
            del self.first_seen[key]
        return {key: now - self.first_seen.setdefault(key, now) for key in running}


@dataclass
class Backoff:
    """Seconds to wait after the n-th failed turn in a row: 1, 2, 4, ... up to the cap the error asks for."""

    failures: int = 0

    def next(self, cap: float) -> float:
        self.failures += 1
        return float(min(2.0 ** (self.failures - 1), cap))

    def reset(self) -> None:
        self.failures = 0
