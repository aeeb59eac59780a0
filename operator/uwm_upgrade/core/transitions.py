"""How each action and each outcome changes the status: the bookkeeping half of "decide, then act".

`apply_decision` records an action as decided (a record whole; an effect marks its step Running, to be
written before the effect is carried out); `apply_result` and `apply_error` record what an effect gave.
The order they are called in, each turn, is `turn.py`'s.
"""

from __future__ import annotations

from datetime import datetime

from .actions import (
    Action,
    AdvanceHop,
    AwaitApproval,
    AwaitWindow,
    BackupDatabase,
    BeginRollback,
    Block,
    CompleteStep,
    ComputePlan,
    Effect,
    Fail,
    FinishRollback,
    Idle,
    Pause,
    RecordBackup,
    RecordBaseline,
    RestoreBackup,
    Succeed,
    UpgradeSchema,
    Wait,
    describe,
    steps_of,
)
from .enums import ConditionType, Phase, Reason, StepName, StepState
from .hop_summary import summarise_hop
from .models import BASELINE, StepKey, UpgradePlanStatus
from .observations import NOT_SENT, BackupObservation, PermanentError, TransientError, UpgradeError, Where
from .status import (
    add_steps,
    fail_step,
    finish_step,
    instant,
    note_step,
    record_backup,
    record_server,
    reset_running_steps,
    set_condition,
    set_phase,
    stamp,
    start_step,
    with_display,
)


def _working_phase(status: UpgradePlanStatus) -> Phase:
    if status.rolling_back:
        return Phase.ROLLING_BACK
    return Phase.RUNNING if status.started else Phase.PLANNING


ROLLBACK_HEADLINE = "rolling back hop "


def _working(status: UpgradePlanStatus, reason: str, message: str, now: datetime) -> UpgradePlanStatus:
    """`set_phase` to the working phase, saying `message`; while a hop is rolled back the status keeps
    saying why, and what the rollback loses (which backup, taken when), whatever step runs: the steps say
    their own progress, and several actions recorded in one write must not bury it."""
    phase = _working_phase(status)
    if phase is Phase.ROLLING_BACK and (status.message or "").startswith(ROLLBACK_HEADLINE):
        message = status.message or message
    return set_phase(status, phase, reason, message, now)


def _key_of(where: Where) -> StepKey | None:
    if where.step is None:
        return None
    return StepKey(where.step, where.hop or 0, where.server, where.database)


def _plan(status: UpgradePlanStatus, action: ComputePlan, now: datetime) -> UpgradePlanStatus:
    done_now = {StepName.PREFLIGHT: "servers, databases and topology are as the spec says",
                StepName.PLAN: action.message}
    steps = tuple(s.model_copy(update={"state": StepState.SUCCEEDED, "started_at": instant(now),
                                       "finished_at": instant(now), "message": done_now[s.name]})
                  if s.name in done_now else s for s in action.steps)
    new = status.model_copy(update={
        "plan_hash": action.plan_hash, "path": tuple(h.as_status() for h in action.path), "current_hop": 0,
        "steps": steps, "target_version": action.target_version, "started_at": None, "completed_at": None,
        "current_version": action.current_version or status.current_version})
    return set_phase(new, Phase.PLANNING, Reason.PLANNED, action.message, now)


def _baseline(status: UpgradePlanStatus, action: RecordBaseline, now: datetime) -> UpgradePlanStatus:
    new = status
    for name, state in action.replication:
        new = record_server(new, name, replication_before=state)
    for name, online in action.rotation:
        new = record_server(new, name, online_before=online)
    summary = ", ".join(f"{n} replication {s}" for n, s in action.replication if s != "None")
    summary += ("; " if summary and action.rotation else "") + ", ".join(
        f"{n} {'in' if o else 'out of'} rotation" for n, o in action.rotation)
    new = finish_step(new, BASELINE, now, f"recorded: {summary or 'no replication, no load balancing'}")
    new = new.model_copy(update={"started_at": instant(now)})
    return set_phase(new, Phase.RUNNING, Reason.RUNNING, "baseline recorded; the upgrade starts", now)


def _fail(status: UpgradePlanStatus, reason: Reason, where: Where, message: str, now: datetime) -> UpgradePlanStatus:
    key = _key_of(where)
    new = status
    if key is not None:
        new = fail_step(new, key, now, f"{reason}: {message}")
    return new


def _requested(status: UpgradePlanStatus, key: StepKey, now: datetime) -> UpgradePlanStatus:
    """Record that the step's irreversible request was sent (once: the first time stays)."""
    step = status.step(key)
    if step is None or step.requested_at is not None:
        return status
    steps = tuple(s.model_copy(update={"requested_at": instant(now)}) if s.key == key else s for s in status.steps)
    return status.model_copy(update={"steps": steps})


def apply_decision(status: UpgradePlanStatus, action: Action, now: datetime, *,
                   display: bool = True) -> UpgradePlanStatus:
    """The status once `action` is decided: records are applied whole, effects mark their step Running.
    `display=False`: without its printer columns (`with_display`, a walk of the steps), for a caller that
    applies many actions and derives them once after the last."""
    match action:
        case Idle():
            return status
        case ComputePlan():
            new = _plan(status, action, now)
        case AwaitApproval(message=message, reason=reason):
            new = set_phase(status, Phase.AWAITING_APPROVAL, reason, message, now)
        case Block(message=message):
            new = set_phase(status, Phase.BLOCKED, Reason.BLOCKED, message, now)
        case AwaitWindow(reason=reason, message=message, next_start=next_start):
            new = status.model_copy(update={"next_window_start": instant(next_start) if next_start else None})
            new = set_phase(new, Phase.AWAITING_WINDOW, reason, message, now)
        case Pause(message=message):
            new = reset_running_steps(status, "paused here; resumes here")
            new = set_phase(new, Phase.PAUSED, Reason.PAUSED, message, now)
        case RecordBaseline():
            new = _baseline(status, action, now)
        case AdvanceHop(hop=hop, from_version=f, to_version=t):
            new = summarise_hop(status, hop - 1).model_copy(update={"current_hop": hop})
            new = set_phase(new, Phase.RUNNING, Reason.RUNNING, f"hop {hop}/{len(status.path)}: {f} -> {t}", now)
        case CompleteStep(step=step, message=message, skipped=skipped):
            new = finish_step(status, step, now, message, skipped=skipped)
            new = _working(new, Reason.IN_PROGRESS, f"{step}: {message}", now)
        case RecordBackup(step=step, backup=backup):
            new = record_backup(status, step.database or "", step.hop, backup, now)
            new = finish_step(new, step, now, f"backup {backup.id} verified")
            new = _working(new, Reason.IN_PROGRESS, f"{step}: backup {backup.id} verified", now)
        case Wait(reason=reason, message=message, steps=steps):
            new = status
            for key in steps:
                new = start_step(new, key, now, message)
            new = _working(new, reason, message, now)
        case Succeed(message=message):
            new = status.model_copy(update={"completed_at": instant(now), "current_version": status.target_version})
            new = set_phase(new, Phase.SUCCEEDED, Reason.SUCCEEDED, message, now)
        case Fail(reason=reason, where=where, message=message, cause=failed_on):
            new = _fail(status, failed_on or reason, where, message, now)
            new = new.model_copy(update={"completed_at": instant(now)})
            new = set_phase(new, Phase.FAILED, reason, f"failed at {where}: {message}", now)
        case BeginRollback(reason=reason, where=where, message=message, steps=steps):
            new = add_steps(_fail(status, reason, where, message, now), steps)
            new = set_phase(new, Phase.ROLLING_BACK, Reason.ROLLING_BACK,
                            f"{ROLLBACK_HEADLINE}{status.current_hop} after {reason} at {where}: {message}", now)
        case FinishRollback(message=message):
            cause = next((s for s in reversed(status.steps) if s.state is StepState.FAILED
                          and s.hop == status.current_hop), None)
            text = f"{message}; it failed at {cause.key}: {cause.message}" if cause else message
            new = status.model_copy(update={"completed_at": instant(now)})
            new = set_phase(new, Phase.ROLLED_BACK, Reason.ROLLED_BACK, text, now)
        case _:
            (key,) = steps_of(action)
            new = start_step(status, key, now, describe(action))
            new = _working(new, Reason.IN_PROGRESS, describe(action), now)
    if new.next_window_start is not None and new.phase is not Phase.AWAITING_WINDOW:
        new = new.model_copy(update={"next_window_start": None})  # not waiting for a window (any more)
    return with_display(new) if display else new


def apply_result(status: UpgradePlanStatus, action: Action, result: BackupObservation | None,
                 now: datetime) -> UpgradePlanStatus:
    """The status once an effect was carried out. Only a backup or a restore ends its step here: every
    other step ends when the estate is seen to have changed (`CompleteStep`)."""
    if not isinstance(action, Effect):
        return status
    match action:
        case BackupDatabase(step=step, database=database):
            if result is None or not result.verified or result.id != action.backup_id:
                new = fail_step(status, step, now, f"{Reason.BACKUP_FAILED}: the backup of {database} could not be"
                                                   " verified")
            else:
                new = record_backup(status, database, step.hop, result, now)
                new = finish_step(new, step, now, f"backup {result.id} verified")
        case RestoreBackup(step=step, database=database, backup_id=backup_id):
            new = finish_step(status, step, now, f"{database} restored from backup {backup_id}; "
                                                 + _lost_since(status, database, now))
        case UpgradeSchema(step=step):
            new = note_step(_requested(status, step, now), step, f"{describe(action)}: requested")
        case _:
            new = note_step(status, action.step, f"{describe(action)}: requested")
    return with_display(new)


def _lost_since(status: UpgradePlanStatus, database: str, now: datetime) -> str:
    recorded = status.database(database)
    taken = recorded.last_backup.taken_at if recorded and recorded.last_backup else None
    return f"user data written to it from {stamp(taken)} to {stamp(instant(now))} is lost"


def apply_error(status: UpgradePlanStatus, action: Action, error: UpgradeError, now: datetime) -> UpgradePlanStatus:
    """A transient error leaves the step Running (decide() will ask again, within the step's timeout); a
    permanent one fails the step, and the next decide() applies the failure policy."""
    if not isinstance(action, Effect):
        return status
    if isinstance(error, TransientError):
        new = status
        if isinstance(action, UpgradeSchema) and error.rule != NOT_SENT:  # it may have arrived: asked once
            new = _requested(new, action.step, now)
        new = note_step(new, action.step, f"retrying: {error.message}")
        new = set_phase(new, _working_phase(new), Reason.RETRYING, f"{describe(action)}: {error.message}", now)
    else:
        rule = f" (rule {error.rule})" if isinstance(error, PermanentError) and error.rule else ""
        new = fail_step(status, action.step, now, f"{error.message}{rule}")
    return with_display(new)


def reject_spec(status: UpgradePlanStatus, message: str, now: datetime) -> UpgradePlanStatus:
    """The spec failed validation (`models.SpecError`). Before the first change the plan just waits in
    Pending for a valid spec; once the estate was touched, it fails (the CRD forbids such edits, so this
    means the CRD in the cluster is not the one the operator was built for)."""
    if _working_phase(status) is Phase.PLANNING and status.phase not in (Phase.FAILED, Phase.ROLLED_BACK):
        new = set_phase(status, Phase.PENDING, Reason.INVALID_SPEC, f"invalid spec: {message}", now)
        new = set_condition(new, ConditionType.READY, False, Reason.INVALID_SPEC, f"invalid spec: {message}", now)
        new = set_condition(new, ConditionType.STALLED, True, Reason.INVALID_SPEC, f"invalid spec: {message}", now)
        return with_display(new)
    return apply_decision(status, Fail(Reason.INVALID_SPEC, Where(), f"invalid spec: {message}"), now)
