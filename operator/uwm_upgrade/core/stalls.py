"""The loop's own `Stalled`: the plan's loop could not finish a turn, and says why, until a turn succeeds.

kstatus (Flux, Helm `--wait`, Argo CD) reads `Stalled=True` as "the controller cannot make progress on
its own". The phase sets it for a plan over without reaching its target (`status.phase_stall`); the
engine also sets it when a turn ends in an error nothing else in the status accounts for (an exception no
adapter mapped, a status write the API server refused as invalid), with the error's type and a redacted
message, and clears it once a turn goes through: back to what the phase says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .enums import ConditionStatus, ConditionType, EventReason, EventType, Reason
from .models import UpgradePlanStatus
from .observations import redact
from .status import LOOP_STALLS, UNDER_WAY, observe_generation, phase_stall, set_condition


@dataclass(frozen=True)
class StallEvent:
    """The Event a change of the `Stalled` condition means (posted once per change, not per retry)."""

    type: EventType
    reason: EventReason
    note: str


def stalled(status: UpgradePlanStatus, reason: Reason, message: str, now: datetime,
            generation: int | None = None) -> UpgradePlanStatus:
    """`Stalled=True` with `reason` and the (redacted) `message` (computed for `generation`, when given: a
    plan whose first turn fails says so for the spec it has); nothing else of the status changes."""
    current = status if generation is None else observe_generation(status, generation)
    # kstatus reads Reconciling before Stalled: never both True
    current = set_condition(current, ConditionType.RECONCILING, ConditionStatus.FALSE, reason, "stalled", now)
    return set_condition(current, ConditionType.STALLED, ConditionStatus.TRUE, reason, redact(message), now)


def unstalled(status: UpgradePlanStatus, now: datetime) -> UpgradePlanStatus:
    """Once a turn went through, a stall of the loop's ends: `Stalled` says what the phase says again."""
    old = status.condition(ConditionType.STALLED)
    if old is None or old.status is ConditionStatus.FALSE or old.reason not in LOOP_STALLS:
        return status
    cleared = set_condition(status, ConditionType.STALLED, ConditionStatus.FALSE, Reason.NOT_STALLED,
                            "the last turn went through", now)
    if status.phase in UNDER_WAY:
        cleared = set_condition(cleared, ConditionType.RECONCILING, ConditionStatus.TRUE, Reason.RECOVERED,
                                status.message or str(status.phase), now)
    failed = status.condition(ConditionType.FAILED)
    if failed is None or failed.status is not ConditionStatus.TRUE:
        return cleared
    return phase_stall(cleared, failed.reason or str(status.phase), failed.message or "", now)


def stall_event(old: UpgradePlanStatus, new: UpgradePlanStatus) -> StallEvent | None:
    """A Warning when the plan stalls (or stalls for another reason or message), a Normal when it recovers."""
    before, after = old.condition(ConditionType.STALLED), new.condition(ConditionType.STALLED)
    if after is None or before == after:
        return None
    if before is not None and before.reason not in LOOP_STALLS:
        before = None  # the phase's (the Event of the phase change says it)
    if after.status is ConditionStatus.TRUE and after.reason not in LOOP_STALLS:
        return None
    if after.status is ConditionStatus.TRUE:
        if before is not None and before.status is after.status and (before.reason, before.message) == (
                after.reason, after.message):
            return None
        return StallEvent(EventType.WARNING, EventReason.STALLED, f"{after.reason}: {after.message}")
    if before is not None and before.status is ConditionStatus.TRUE:
        return StallEvent(EventType.NORMAL, EventReason.RECOVERED, f"no longer stalled ({before.reason})")
    return None
