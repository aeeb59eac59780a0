"""What users steer a plan with besides pause and approval: retry, abort and the maintenance window.

They are spec fields (the CRD's CEL rules can read those, not annotations), none of them part of what is
approved (`planning.UNAPPROVED`):

- `spec.retry` (a counter that only grows, and only while the plan is Failed): each increase is honoured
  once (`status.retries` records the last one). A plan that failed before it changed anything plans again
  from scratch (preflight, plan, approval as the spec asks). A plan that failed during a hop goes on from
  its failed step: that step (every step that failed in the current hop) is set back to Pending and
  judged again from the estate by the next `decide()`, exactly as after a crash, so first of all the spec
  must still describe the plan that ran (its planHash), every server and database must be observed, be who
  the spec says and lie between the hop's two releases. A failed or unconfirmed schema migration is never
  retried (the data-safety rules: restore the database by hand first, then recreate the plan), and nor is a
  plan while another plan holds part of its estate.
- `spec.abort` (`Halt` or `Rollback`, can only be set): at the next safe point (nothing installing or
  migrating, no restore under way) the plan halts (`Failed`, reason `Aborted`), or its current hop is
  rolled back by the same rules as failurePolicy Rollback: a database whose clients were served on the
  new release is never restored (the plan halts with `RollbackUnsafe` instead).
- a wait before the start that nothing else bounds (a server it cannot observe, the estate busy) makes
  the plan `Stalled` (ProgressDeadlineExceeded: kstatus's Failed) once it lasts longer than a step may
  run, and no longer once it ends (`past_deadline`).
- `spec.maintenanceWindow`: nothing that takes a server offline starts outside it: the run (its
  baseline, then hop 1) and each later hop start only inside a window, and only when the hop's expected
  duration (`window.hop_estimate`) fits in what is left of it; the plan waits in phase AwaitingWindow,
  with `status.nextWindowStart`. A hop that started runs to its end (stopping halfway would keep its
  servers out of service longer).
"""

from __future__ import annotations

from datetime import datetime

from .actions import (
    Action,
    AdvanceHop,
    AwaitWindow,
    CompleteStep,
    Effect,
    Fail,
    Final,
    RecordBackup,
    RecordBaseline,
    RestoreBackup,
    UpgradeSchema,
    Wait,
)
from .context import Context, Limits, describe_estate, hop_of
from .enums import (
    AbortMode,
    ConditionStatus,
    ConditionType,
    FailurePolicy,
    Phase,
    Reason,
    StepState,
)
from .models import UpgradePlanSpec, UpgradePlanStatus
from .observations import Observations, Where
from .planning import catalog_of
from .status import UNDER_WAY, set_condition, set_phase, stamp, with_display
from .strategies import strategy_for
from .window import fit, hop_estimate

# Waits before the run starts that nothing else bounds (a running step's waits count against its timeout).
UNBOUNDED_WAITS = frozenset({Reason.OBSERVATION_UNAVAILABLE, Reason.ESTATE_BUSY})
# A schema migration is asked for once and never migrated over: no retry may ask for it again.
NEVER_RETRIED = frozenset({Reason.MIGRATION_FAILED, Reason.MIGRATION_UNCONFIRMED})


# ---------------------------------------------------------------- retry


def retry_pending(spec: UpgradePlanSpec, status: UpgradePlanStatus) -> bool:
    """`spec.retry` grew since the last one honoured."""
    return spec.retry > (status.retries or 0)


def retried(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime) -> UpgradePlanStatus:
    """The status once a pending retry is honoured (or refused, saying why); unchanged without one."""
    if not retry_pending(spec, status):
        return status
    counted = status.model_copy(update={"retries": spec.retry})
    if status.phase is not Phase.FAILED:  # a counter raised on a plan that was not Failed: nothing to retry
        return counted
    failed = status.condition(ConditionType.FAILED)
    cause = failed.reason if failed is not None else None
    if cause in NEVER_RETRIED:
        return _refused(counted, f"a schema migration is never requested again ({cause}): restore the database"
                                 " from the backup the Failed condition names, click CLOSE, then recreate the plan")
    if seen.competing_plans:
        return _refused(counted, f"{', '.join(seen.competing_plans)} holds part of this estate; retry once it is over")
    number = spec.retry
    if not status.started:
        fresh = counted.model_copy(update={"steps": (), "path": (), "plan_hash": None, "current_hop": 0,
                                           "completed_at": None, "started_at": None})
        return with_display(set_phase(fresh, Phase.PLANNING, Reason.RETRYING_PLAN,
                                      f"retry {number}: planning again from the estate as it is", now))
    steps = tuple(s.model_copy(update={"state": StepState.PENDING, "started_at": None, "finished_at": None,
                                       "retried_at": now.replace(microsecond=0),
                                       "message": f"retry {number}: was {s.message or 'Failed'}"})
                  if s.state is StepState.FAILED and s.hop == status.current_hop else s for s in status.steps)
    resumed = counted.model_copy(update={"steps": steps, "completed_at": None})
    phase = Phase.ROLLING_BACK if resumed.rolling_back else Phase.RUNNING
    return with_display(set_phase(resumed, phase, Reason.RETRYING_PLAN,
                                  f"retry {number}: going on from where it failed ({cause})", now))


def _refused(status: UpgradePlanStatus, why: str) -> UpgradePlanStatus:
    return status.model_copy(update={"message": f"retry {status.retries} refused: {why}"})


# ---------------------------------------------------------------- abort


def abort_at_safe_point(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime,
                        action: Action, limits: Limits, in_flight: str | None) -> Action:
    """What `spec.abort` makes of `action`: the plan stops at the next safe point (`in_flight` None)."""
    if spec.abort is None or isinstance(action, Final):
        return action
    if not status.started:
        return Fail(Reason.ABORTED, Where(), "aborted (spec.abort) before the upgrade started: nothing was changed")
    if in_flight is not None:
        if isinstance(action, Effect) and not isinstance(action, UpgradeSchema | RestoreBackup):
            return Wait(Reason.ABORTED, limits.poll_seconds, f"aborting once this is over: {in_flight}")
        return action  # what completes the operation in flight
    if isinstance(action, CompleteStep | RecordBackup):
        return action  # record what already finished, then stop
    hop = status.current_hop
    if spec.abort is AbortMode.ROLLBACK and status.rolling_back:
        return action  # the hop is being rolled back already: let it finish
    estate = describe_estate(spec, seen, status)
    if spec.abort is AbortMode.HALT or hop == 0:
        return Fail(Reason.ABORTED, Where(hop or None), f"aborted at a safe point (spec.abort {spec.abort}); {estate}")
    undoing = spec.model_copy(update={"failure_policy": FailurePolicy.ROLLBACK})
    ctx = Context(undoing, status, seen, now, limits, catalog_of(spec), hop_of(status, hop), strategy_for(spec))
    return ctx.failure(Reason.ABORTED, Where(hop), "aborted at a safe point (spec.abort Rollback)")


# ---------------------------------------------------------------- maintenance window


def hold_for_window(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime,
                    action: Action, limits: Limits) -> Action:
    """`action` if it starts nothing, or if its hop fits in the window now; else wait for the window."""
    window = spec.maintenance_window
    if window is None:
        return action
    if isinstance(action, RecordBaseline):
        hop = 1
    elif isinstance(action, AdvanceHop) and action.hop > 1:
        hop = action.hop
    else:
        return action
    if seen.zone is None:
        return AwaitWindow(Reason.UNKNOWN_TIME_ZONE, (f"spec.maintenanceWindow.timeZone {window.time_zone} is not in"
                                                      " the operator's time zone database: nothing starts"),
                           limits.idle_seconds)
    seconds = hop_estimate(spec, status, hop)
    found = fit(window, seen.zone, now, seconds)
    if found.open is not None:
        return action
    minutes = f"hop {hop} (expected to take {seconds / 60:.0f} min)"
    if found.next_start is None:
        return Fail(Reason.HOP_DOES_NOT_FIT, Where(hop if status.started else None), (
            f"{minutes} fits in no window of spec.maintenanceWindow (the longest is {found.longest / 60:.0f} min):"
            " widen the window, then retry (spec.retry)"))
    local = found.next_start.astimezone(seen.zone).strftime("%a %Y-%m-%d %H:%M")
    why = "does not fit in what is left of this window" if found.inside else "waits"
    return AwaitWindow(Reason.HOP_DOES_NOT_FIT if found.inside else Reason.OUTSIDE_WINDOW,
                       f"{minutes} {why}: next maintenance window it fits in opens {local} {window.time_zone}",
                       limits.idle_seconds, found.next_start)


# ---------------------------------------------------------------- a wait past its deadline


def past_deadline(status: UpgradePlanStatus, now: datetime, limits: Limits) -> UpgradePlanStatus:
    """`Stalled=True` (ProgressDeadlineExceeded) while the plan has waited before its start, on what only
    a person can fix (a server or database it cannot observe, the estate busy), longer than a step may run
    (`limits.step_seconds`); back to what the phase says once the wait ends."""
    progressing = status.condition(ConditionType.PROGRESSING)
    stall = status.condition(ConditionType.STALLED)
    since = status.phase_since
    waited = (now - since).total_seconds() if since is not None else 0.0
    stuck = (status.phase is Phase.PLANNING and progressing is not None and progressing.reason in UNBOUNDED_WAITS
             and waited > limits.step_seconds)
    if stuck:
        assert progressing is not None
        message = f"waiting since {stamp(since)}, longer than a step may run ({limits.step_seconds:.0f} s): " \
                  f"{progressing.message}"
        new = set_condition(status, ConditionType.RECONCILING, False, Reason.PROGRESS_DEADLINE_EXCEEDED, "stalled", now)
        return set_condition(new, ConditionType.STALLED, True, Reason.PROGRESS_DEADLINE_EXCEEDED, message, now)
    if stall is None or stall.status is not ConditionStatus.TRUE or stall.reason != Reason.PROGRESS_DEADLINE_EXCEEDED:
        return status
    new = set_condition(status, ConditionType.STALLED, False, Reason.NOT_STALLED, "the wait is over", now)
    if status.phase in UNDER_WAY:
        new = set_condition(new, ConditionType.RECONCILING, True, Reason.IN_PROGRESS, status.message or "", now)
    return new
