"""Pure status transactions: each takes a status and returns a new one; `status_patch` says what changed.

Modelled on cloudnative-pg's status transactions: the handler never edits the status in place, it
composes these functions and writes `status_patch(old, new)` (a JSON merge patch, or None when nothing
changed, so an idle loop never writes). Times are cut to whole seconds (RFC 3339 in the API), and a
transaction that changes nothing returns a status equal to its input, so repeating one is harmless.

Conditions follow Kubernetes conventions (metav1.Condition, every field set): one per type,
`lastTransitionTime` moves only when `status` changes (a new reason or message alone does not move it),
`observedGeneration` is the generation the status was computed for. `set_phase` keeps the phase and the
phase-bound conditions in step, kstatus's two among them: `Reconciling` is True while the plan is under
way (also paused, awaiting approval or its window: not done yet), `Stalled` is True when it is over
without reaching its target (Failed, RolledBack); `stalls.py` adds the loop's own stalls.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .baseline import retired
from .cutover import cutovers
from .enums import (
    DONE_STATES,
    STALLED_PHASES,
    ConditionStatus,
    ConditionType,
    Health,
    Phase,
    Reason,
    ReplicationRole,
    ReplicationState,
    ServerPhase,
    StepName,
    StepState,
)
from .models import (
    BackupRecord,
    Condition,
    DatabaseStatus,
    ServedRecord,
    Server,
    ServerStatus,
    StepKey,
    StepStatus,
    UpgradePlanSpec,
    UpgradePlanStatus,
    status_to_wire,
)
from .observations import BackupObservation, Observations, ServerObservation, redact
from .plan_status import replaced_step, step_positions
from .planning import lowest_version

CONDITION_ORDER = tuple(ConditionType)
MAX_MESSAGE = 4096
# The loop's own stalls (`stalls.py`): they last until a turn goes through, whatever the phase says; and
# a wait past its deadline (`control.past_deadline`), which lasts until the wait ends. Neither is the
# phase's to clear, and while one holds the plan is not Reconciling (kstatus reads that first).
LOOP_STALLS = frozenset({Reason.UNEXPECTED_ERROR, Reason.STATUS_WRITE_REFUSED})
KEPT_STALLS = LOOP_STALLS | {Reason.PROGRESS_DEADLINE_EXCEEDED}


def _order(condition: Condition) -> tuple[int, str]:
    """Ours in the order of `ConditionType`, then any other writer's by type."""
    if isinstance(condition.type, ConditionType):
        return CONDITION_ORDER.index(condition.type), ""
    return len(CONDITION_ORDER), condition.type


def instant(now: datetime) -> datetime:
    """`now` as stored: whole seconds (the API server keeps RFC 3339 times to the second)."""
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return now.replace(microsecond=0)


def stamp(at: datetime | None) -> str:
    """A time as messages say it: RFC 3339 in UTC (`2026-01-05T09:00:00Z`), as `kubectl` shows times."""
    return at.isoformat().replace("+00:00", "Z") if at is not None else "an unknown time"


def _text(message: str | None) -> str | None:
    if message is None:
        return None
    message = redact(message) if len(message) <= MAX_MESSAGE else redact(message[:MAX_MESSAGE])
    return message[:MAX_MESSAGE]


# ---------------------------------------------------------------- conditions and phase


def set_condition(status: UpgradePlanStatus, kind: ConditionType, value: ConditionStatus | bool, reason: str,
                  message: str, now: datetime) -> UpgradePlanStatus:
    """Set one condition; its `lastTransitionTime` changes only when its status does."""
    if isinstance(value, bool):
        value = ConditionStatus.TRUE if value else ConditionStatus.FALSE
    old = status.condition(kind)
    moved = old is None or old.status is not value or old.last_transition_time is None
    new = Condition(type=kind, status=value, reason=reason, message=_text(message) or "",
                    last_transition_time=instant(now) if moved else (old.last_transition_time if old else None),
                    observed_generation=status.observed_generation)
    if old == new:
        return status
    others = [c for c in status.conditions if c.type != kind]
    ordered = sorted([*others, new], key=_order)
    return status.model_copy(update={"conditions": tuple(ordered)})


UNDER_WAY = frozenset({Phase.PLANNING, Phase.AWAITING_APPROVAL, Phase.BLOCKED, Phase.RUNNING, Phase.PAUSED,
                       Phase.ROLLING_BACK, Phase.AWAITING_WINDOW})
_PHASE_CONDITIONS: dict[ConditionType, frozenset[Phase]] = {
    ConditionType.READY: frozenset({Phase.SUCCEEDED}),
    ConditionType.RECONCILING: UNDER_WAY,
    ConditionType.PROGRESSING: frozenset({Phase.PLANNING, Phase.RUNNING, Phase.ROLLING_BACK}),
    ConditionType.SUCCEEDED: frozenset({Phase.SUCCEEDED}),
    ConditionType.FAILED: frozenset({Phase.FAILED, Phase.ROLLED_BACK}),
    ConditionType.PAUSED: frozenset({Phase.PAUSED}),
    ConditionType.BLOCKED: frozenset({Phase.BLOCKED}),
    ConditionType.AWAITING_APPROVAL: frozenset({Phase.AWAITING_APPROVAL}),
    ConditionType.AWAITING_WINDOW: frozenset({Phase.AWAITING_WINDOW}),
}
# When a condition stops holding, the reason it says so (by default the new phase).
_ENDED_REASONS = {
    ConditionType.AWAITING_APPROVAL: (Reason.APPROVED, "the plan hash was approved"),
    ConditionType.PAUSED: (Reason.NOT_PAUSED, "resumed (spec.paused is false)"),
    ConditionType.BLOCKED: (Reason.NOT_BLOCKED, "no other plan holds this estate"),
    ConditionType.AWAITING_WINDOW: (Reason.IN_WINDOW, "started within spec.maintenanceWindow"),
}
# What they say before they ever held.
_NEVER_HELD = {
    ConditionType.AWAITING_APPROVAL: (Reason.NOT_AWAITING_APPROVAL, "no approval is pending"),
    ConditionType.PAUSED: (Reason.NOT_PAUSED, "spec.paused is false"),
    ConditionType.BLOCKED: (Reason.NOT_BLOCKED, "no other plan holds this estate"),
    ConditionType.AWAITING_WINDOW: (Reason.NO_WINDOW, "not waiting for a maintenance window"),
}
_ALWAYS_SAY_PHASE = frozenset({ConditionType.READY, ConditionType.RECONCILING, ConditionType.PROGRESSING,
                               ConditionType.SUCCEEDED, ConditionType.FAILED})


def set_phase(status: UpgradePlanStatus, phase: Phase, reason: str, message: str, now: datetime) -> UpgradePlanStatus:
    """Move to `phase` and set every phase-bound condition to agree with it.

    The conditions the phase is about (e.g. Failed for Failed, Progressing for Running) carry `reason`
    and `message`; Ready, Progressing, Succeeded and Failed otherwise say the phase. Paused, Blocked and
    AwaitingApproval, once they end, keep saying how they ended (e.g. `Approved`) until they hold again.
    """
    since = status.phase_since if phase is status.phase and status.phase_since is not None else instant(now)
    new = status.model_copy(update={"phase": phase, "phase_since": since, "message": _text(message)})
    stall = status.condition(ConditionType.STALLED)
    kept = stall is not None and stall.status is ConditionStatus.TRUE and stall.reason in KEPT_STALLS
    for kind, phases in _PHASE_CONDITIONS.items():
        old = new.condition(kind)
        if kind is ConditionType.RECONCILING and kept and phase not in STALLED_PHASES:
            continue  # stalled, not reconciling, until the stall ends
        if phase in phases:
            new = set_condition(new, kind, True, reason, message, now)
        elif kind in _ALWAYS_SAY_PHASE:
            new = set_condition(new, kind, False, str(phase), f"phase {phase}", now)
        elif old is None:
            never_reason, never_message = _NEVER_HELD[kind]
            new = set_condition(new, kind, False, never_reason, never_message, now)
        elif old.status is not ConditionStatus.FALSE:
            ended_reason, ended_message = _ENDED_REASONS[kind]
            new = set_condition(new, kind, False, ended_reason, ended_message, now)
    return phase_stall(new, reason, message, now)


def phase_stall(status: UpgradePlanStatus, reason: str, message: str, now: datetime) -> UpgradePlanStatus:
    """`Stalled` as the phase says: True, with `reason` and `message`, for a plan over without reaching its
    target; else False, unless the loop itself is stalled (that lasts until a turn goes through)."""
    if status.phase in STALLED_PHASES:
        return set_condition(status, ConditionType.STALLED, True, reason, message, now)
    old = status.condition(ConditionType.STALLED)
    if old is not None and old.status is ConditionStatus.TRUE and old.reason in KEPT_STALLS:
        return status
    return set_condition(status, ConditionType.STALLED, False, Reason.NOT_STALLED, f"phase {status.phase}", now)


def observe_generation(status: UpgradePlanStatus, generation: int) -> UpgradePlanStatus:
    """The status (and every condition) computed for `generation` of the spec."""
    if status.observed_generation == generation:
        return status
    conditions = tuple(c.model_copy(update={"observed_generation": generation}) for c in status.conditions)
    return status.model_copy(update={"observed_generation": generation, "conditions": conditions})


# ---------------------------------------------------------------- steps


def _replace_step(status: UpgradePlanStatus, key: StepKey, step: StepStatus) -> UpgradePlanStatus:
    i = step_positions(status.steps).get(key)
    if i is None:
        return status.model_copy(update={"steps": (*status.steps, step)})
    if status.steps[i] == step:
        return status
    return status.model_copy(update={"steps": replaced_step(status.steps, i, step)})


def _blank(key: StepKey) -> StepStatus:
    return StepStatus(name=key.name, hop=key.hop, server=key.server, database=key.database)


def start_step(status: UpgradePlanStatus, key: StepKey, now: datetime, message: str | None = None) -> UpgradePlanStatus:
    """Mark a step Running (a step already Running keeps its start time: that is what its timeout counts)."""
    step = status.step(key) or _blank(key)
    if step.state is StepState.RUNNING:
        update: dict[str, Any] = {} if message is None else {"message": _text(message)}
    elif step.state is StepState.PENDING:
        update = {"state": StepState.RUNNING, "started_at": instant(now), "finished_at": None,
                  "message": _text(message)}
    else:
        return status  # done or failed steps are not restarted
    return _replace_step(status, key, step.model_copy(update=update))


def finish_step(status: UpgradePlanStatus, key: StepKey, now: datetime, message: str,
                skipped: bool = False) -> UpgradePlanStatus:
    step = status.step(key) or _blank(key)
    if step.state in DONE_STATES:
        return status
    state = StepState.SKIPPED if skipped else StepState.SUCCEEDED
    return _replace_step(status, key, step.model_copy(update={
        "state": state, "started_at": step.started_at or instant(now), "finished_at": instant(now),
        "message": _text(message)}))


def fail_step(status: UpgradePlanStatus, key: StepKey, now: datetime, message: str) -> UpgradePlanStatus:
    """Mark a step Failed (a step that does not exist yet, e.g. a failed preflight, is added)."""
    step = status.step(key) or _blank(key)
    if step.state is StepState.FAILED:
        return status
    return _replace_step(status, key, step.model_copy(update={
        "state": StepState.FAILED, "started_at": step.started_at or instant(now), "finished_at": instant(now),
        "message": _text(message)}))


def note_step(status: UpgradePlanStatus, key: StepKey, message: str) -> UpgradePlanStatus:
    step = status.step(key)
    if step is None or step.state in DONE_STATES:
        return status
    return _replace_step(status, key, step.model_copy(update={"message": _text(message)}))


def reset_running_steps(status: UpgradePlanStatus, message: str) -> UpgradePlanStatus:
    """Running steps back to Pending (a pause): on resume they start again, with a fresh timeout."""
    steps = tuple(s.model_copy(update={"state": StepState.PENDING, "started_at": None, "message": message})
                  if s.state is StepState.RUNNING else s for s in status.steps)
    return status if steps == status.steps else status.model_copy(update={"steps": steps})


def add_steps(status: UpgradePlanStatus, steps: Iterable[StepStatus]) -> UpgradePlanStatus:
    known = {s.key for s in status.steps}
    extra = tuple(s for s in steps if s.key not in known)
    return status.model_copy(update={"steps": status.steps + extra}) if extra else status


# ---------------------------------------------------------------- servers and databases


def record_server(status: UpgradePlanStatus, name: str, **fields: Any) -> UpgradePlanStatus:
    """Create or update `servers[name]` (fields by their Python names)."""
    old = status.server(name) or ServerStatus(name=name)
    new = old.model_copy(update=fields)
    if new == old and status.server(name) is not None:
        return status
    servers = [new if s.name == name else s for s in status.servers]
    if status.server(name) is None:
        servers.append(new)
    return status.model_copy(update={"servers": tuple(servers)})


def record_database(status: UpgradePlanStatus, name: str, **fields: Any) -> UpgradePlanStatus:
    old = status.database(name) or DatabaseStatus(name=name)
    new = old.model_copy(update=fields)
    if new == old and status.database(name) is not None:
        return status
    databases = [new if d.name == name else d for d in status.databases]
    if status.database(name) is None:
        databases.append(new)
    return status.model_copy(update={"databases": tuple(databases)})


def record_backup(status: UpgradePlanStatus, database: str, hop: int, backup: BackupObservation,
                  now: datetime) -> UpgradePlanStatus:
    taken = instant(backup.taken_at) if backup.taken_at and backup.taken_at.tzinfo else instant(now)
    record = BackupRecord(id=backup.id, hop=hop, taken_at=taken, verified=backup.verified)
    return record_database(status, database, last_backup=record)


def record_observations(status: UpgradePlanStatus, spec: UpgradePlanSpec, seen: Observations,
                        now: datetime) -> UpgradePlanStatus:
    """Refresh `servers[]`, `databases[]`, `currentVersion` and the ReplicationDisabled condition."""
    new = status
    for server in (*spec.servers(), *spec.replacement_servers()):
        obs = seen.servers.get(server.name)
        if obs is None:
            new = record_server(new, server.name, kind=server.kind, health=Health.UNKNOWN)
            continue
        page = seen.health.get(server.name)
        if obs.phase is ServerPhase.LOCKED_OUT:
            health = Health.LOCKED_OUT
        elif page is None:
            health = Health.UNKNOWN
        else:
            health = Health.HEALTHY if page.ok else Health.UNHEALTHY
        replication = ReplicationState.NONE if server.role is ReplicationRole.NONE else (
            ReplicationState.ENABLED if obs.replication_enabled else ReplicationState.DISABLED)
        online = obs.in_rotation if server.load_balanced else obs.phase is ServerPhase.RUNNING and obs.online
        known = new.server(server.name)
        since = None if online else (known.offline_since if known and known.offline_since else instant(now))
        new = record_server(new, server.name, kind=server.kind, version=obs.version, online=online,
                            replication=replication, health=health, offline_since=since)
    for db in spec.databases:
        dbo = seen.databases.get(db.name)
        new = record_database(new, db.name, kind=db.kind, **({"schema_version": dbo.schema_version} if dbo else {}))
    versions = [o.version for o in seen.servers.values() if o.online]  # not new servers before they serve
    if versions and spec.releases:
        current = lowest_version(spec.releases, versions)
        if current != new.current_version:
            new = new.model_copy(update={"current_version": current})
    new = _served(new, spec, seen, now)
    moves = cutovers(new.cutovers, spec, seen, now)
    if moves != new.cutovers:
        new = new.model_copy(update={"cutovers": moves})
    gone = retired(spec, seen)  # strategy CleanInstall: replaced and offline
    disabled = [s.name for s in new.servers if s.name not in gone
                and new.replicated_before(s.name) and s.replication is ReplicationState.DISABLED]
    if disabled:
        return set_condition(new, ConditionType.REPLICATION_DISABLED, True, Reason.REPLICATION_DISABLED_FOR_UPGRADE,
                             "replication disabled for the upgrade on " + ", ".join(disabled), now)
    return set_condition(new, ConditionType.REPLICATION_DISABLED, False, Reason.REPLICATION_AS_BEFORE,
                         "replication is as it was before the plan", now)


def _serves(status: UpgradePlanStatus, server: Server, obs: ServerObservation, version: str, hop: int) -> bool:
    """`server` serves clients on `version`: load-balanced, back in rotation at it; else Running and online
    at it once its health check of the hop confirmed (a server without a pool serves whenever it runs)."""
    if obs.version != version:
        return False
    if server.load_balanced:
        return obs.in_rotation
    check = status.step(StepKey(StepName.HEALTH_CHECK, hop, server.name))
    return obs.phase is ServerPhase.RUNNING and obs.online and check is not None and check.state is StepState.SUCCEEDED


def _served(status: UpgradePlanStatus, spec: UpgradePlanSpec, seen: Observations, now: datetime) -> UpgradePlanStatus:
    """Record, per database, when its clients were first seen served on the current hop's new release
    (`databases[].newReleaseServed`): from then on the hop's backup is no longer restored (core/safety.py)."""
    if not status.started or not 1 <= status.current_hop <= len(status.path):
        return status
    hop, version = status.current_hop, status.path[status.current_hop - 1].to_version
    new = status
    for db in spec.databases:
        recorded = new.database(db.name)
        if recorded is not None and recorded.new_release_served is not None \
                and recorded.new_release_served.hop == hop:
            continue
        for server in (*spec.servers_of(db.name), *(r.new for r in spec.replacements() if r.old.database == db.name)):
            obs = seen.servers.get(server.name)
            if obs is not None and _serves(new, server, obs, version, hop):
                mark = ServedRecord(hop=hop, version=version, server=server.name, since=instant(now))
                new = record_database(new, db.name, new_release_served=mark)
                break
    return new


# ---------------------------------------------------------------- printer columns and the patch


def with_display(status: UpgradePlanStatus) -> UpgradePlanStatus:
    """Derive `hopDisplay` (like `1/2`) and `currentStep` (the step in progress, or the one that failed)."""
    hop_display = f"{status.current_hop}/{len(status.path)}" if status.path else None
    current: StepStatus | None = None
    if status.phase is not Phase.SUCCEEDED:
        running = [s for s in status.steps if s.state is StepState.RUNNING]
        failed = [s for s in status.steps if s.state is StepState.FAILED]
        pending = [s for s in status.steps if s.state is StepState.PENDING and s.hop >= status.current_hop]
        if status.phase in (Phase.FAILED, Phase.ROLLED_BACK) and failed:
            current = failed[-1]
        else:
            current = next(iter(running or pending), None)
    current_step = str(current.key) if current is not None else None
    if (hop_display, current_step) == (status.hop_display, status.current_step):
        return status
    return status.model_copy(update={"hop_display": hop_display, "current_step": current_step})


def _merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(before, dict) and isinstance(value, dict):
            patch[key] = _merge_diff(before, value)
        else:
            patch[key] = value
    return patch


def status_patch(old: UpgradePlanStatus, new: UpgradePlanStatus) -> dict[str, Any] | None:
    """The JSON merge patch (RFC 7386) of `.status` from `old` to `new`; None when nothing changed.

    Lists are replaced whole, as a merge patch does; removed fields become null.
    """
    patch = _merge_diff(status_to_wire(old), status_to_wire(new))
    return patch or None
