"""`decide()`: the one pure function that says what the operator does next ("decide, then act").

It reads the spec, the recorded status, what was just observed and the clock, and returns one action
(`actions.py`). It keeps no memory of its own: everything it needs is in the status (the plan, its steps,
the baseline, the backups) or visible in the estate, so after a crash at any instant the next call picks
up exactly where the last one left off, and an irreversible step (a backup, a schema migration, an
install) is never asked for twice once the estate shows it done.

The order of judgement, each gate returning early:
1. over (Succeeded, Failed, RolledBack): `Idle`.
2. not started yet (no baseline recorded): `Block` while another plan holds part of the estate (what
   that plan is changing is not judged: no preflight, no plan, until it is over); then preflight and plan
   again from what is observed; a plan that differs from the recorded one (new spec, changed estate) is
   recorded anew (and needs approval anew); then `Pause`, `AwaitApproval`, `RecordBaseline`.
3. started: the spec must still describe the recorded plan; the current hop's steps (or its rollback's)
   are walked in order and the first unfinished one decides (`steps.py`); a hop done advances the hop,
   the last one ends in `Succeed` after checking every server and schema is at the target.
4. every effect is checked against the guide's rules (`guide.py`) before it is returned.
5. `spec.paused`: at the next safe point (nothing installing or migrating, no restore under way) the
   answer becomes `Pause`; until then only what completes the operation in flight is allowed.
"""

from __future__ import annotations

from datetime import datetime

from . import clean_install
from .actions import (
    Action,
    AdvanceHop,
    AwaitApproval,
    BeginRollback,
    Block,
    CompleteStep,
    ComputePlan,
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
)
from .context import DEFAULT_LIMITS, Context, Limits, describe_estate, hop_of
from .enums import (
    CLEAN_INSTALL_STEPS,
    DONE_STATES,
    TERMINAL_PHASES,
    MigrationStatus,
    Reason,
    ReplicationRole,
    ReplicationState,
    ServerPhase,
    StepName,
    StepState,
    Strategy,
)
from .guide import violations
from .models import StepKey, StepStatus, UpgradePlanSpec, UpgradePlanStatus
from .observations import Observations, Where
from .planning import PlanningError, catalog_of, lowest_version, plan_hash, plan_path, plan_steps
from .steps import (
    backup,
    health,
    install,
    replication_caught_up,
    replication_off,
    replication_on,
    restore,
    rotation_in,
    rotation_out,
    schema,
    server_group,
    verify_schema,
)

__all__ = ["DEFAULT_LIMITS", "Limits", "decide"]

BASELINE = StepKey(StepName.RECORD_BASELINE, 0)
GROUPS = {  # install step -> its health-check step, for servers upgraded in bounded-concurrency batches
    StepName.INSTALL_SERVER: StepName.HEALTH_CHECK,
    StepName.REINSTALL_PREVIOUS: StepName.ROLLBACK_HEALTH_CHECK,
}


def decide(spec: UpgradePlanSpec, status: UpgradePlanStatus, observations: Observations, now: datetime, *,
           approval: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Action:
    """The next action for this plan. `approval` is the value of the `upgrade.uwm.io/approve` annotation."""
    if status.phase in TERMINAL_PHASES:
        return Idle(f"the plan is {status.phase}; delete and recreate it to upgrade again")
    baseline = status.step(BASELINE)
    if baseline is None or baseline.state not in DONE_STATES:
        action = _before_start(spec, status, observations, approval, limits)
    else:
        action = _run(spec, status, observations, now, limits)
    if spec.paused:
        action = _pause_at_safe_point(status, observations, action, limits)
    return action


# ---------------------------------------------------------------- before the first change


def _unobserved(spec: UpgradePlanSpec, seen: Observations) -> list[str]:
    missing = [s.name for s in spec.servers() if s.name not in seen.servers]
    missing += [d.name for d in spec.databases if d.name not in seen.databases]
    if not missing:
        return []
    why = {g.where.server or g.where.database: g.message for g in seen.gaps}
    named = [f"{name} ({why[name]})" if why.get(name) else name for name in missing]
    # Gaps about no one server or database (the plan's Secrets could not be read) say why all are missing.
    general = list(dict.fromkeys(g.message for g in seen.gaps if g.where.server is None and g.where.database is None))
    if general:
        named[-1] += ": " + "; ".join(general)
    return named


def _topology(spec: UpgradePlanSpec, seen: Observations) -> list[str]:
    """Where the estate is not what the spec says it is."""
    problems = []
    for server in spec.servers():
        obs = seen.servers[server.name]
        pairs = (("kind", server.kind, obs.kind), ("database", server.database, obs.database),
                 ("replicationRole", server.role, obs.replication_role),
                 ("loadBalanced", server.load_balanced, obs.load_balanced))
        problems += [f"{server.name}: spec says {field} {want}, the server reports {got}"
                     for field, want, got in pairs if want != got]
    return problems


def _busy(seen: Observations, locked_out: bool = True) -> str | None:
    """An install or a schema migration under way anywhere (and, with `locked_out`, a server locked out)."""
    for name, obs in sorted(seen.servers.items()):
        if obs.busy or (locked_out and obs.phase is ServerPhase.LOCKED_OUT):
            return f"{name} is {obs.phase}"
    for name, db in sorted(seen.databases.items()):
        if db.lock_holder is not None or db.migration is MigrationStatus.UPGRADING:
            return f"the schema of {name} is being upgraded ({db.lock_holder or 'portal'})"
    return None


def _preflight(spec: UpgradePlanSpec, seen: Observations, limits: Limits) -> Action:
    where = Where(0, StepName.PREFLIGHT)
    missing = _unobserved(spec, seen)
    if missing:
        return Wait(Reason.OBSERVATION_UNAVAILABLE, limits.poll_seconds, "cannot observe " + ", ".join(missing))
    problems = _topology(spec, seen)
    if problems:
        return Fail(Reason.TOPOLOGY_MISMATCH, where, "; ".join(problems))
    forbidden = clean_install.in_place_forbidden(spec, seen)
    if forbidden:
        return Fail(Reason.IN_PLACE_FORBIDDEN, where, forbidden)
    failed = [f"{n} ({o.install.error or 'Failed'})" for n, o in sorted(seen.servers.items())
              if o.phase is ServerPhase.FAILED]
    if failed:
        return Fail(Reason.PREFLIGHT_FAILED, where, "servers report Failed: " + ", ".join(failed)
                    + f". {describe_estate(spec, seen)}")
    busy = _busy(seen)
    if busy:
        return Wait(Reason.ESTATE_BUSY, limits.poll_seconds, f"waiting before planning: {busy}")
    versions = {f"server {s.name}": seen.servers[s.name].version for s in spec.servers()}
    versions |= {f"database {d.name}": seen.databases[d.name].schema_version for d in spec.databases}
    try:
        catalog = catalog_of(spec)
        path = plan_path(catalog, versions, spec.target_version, spec.max_major_versions_per_step)
    except PlanningError as exc:
        return Fail(exc.reason, Where(0, StepName.PLAN), exc.message)
    steps = plan_steps(spec, path)
    if spec.strategy is Strategy.CLEAN_INSTALL:
        refused = clean_install.preflight(spec, seen, path, catalog, limits)
        if refused is not None:
            return refused
        steps = clean_install.plan_steps(spec, path)
    current = lowest_version(catalog, [o.version for o in seen.servers.values()])
    route = " -> ".join([path[0].from_version, *(h.to_version for h in path)]) if path else ""
    message = f"path {route} ({len(path)} hop(s))" if path else f"already at {spec.target_version}"
    return ComputePlan(path, plan_hash(spec, path), steps, spec.target_version, current, message)


def _before_start(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, approval: str | None,
                  limits: Limits) -> Action:
    if seen.competing_plans:  # first: the estate is changing under the other plan (busy, versions moving)
        names = ", ".join(seen.competing_plans)
        return Block(seen.competing_plans, f"waiting for {names}, which holds part of this estate",
                     limits.idle_seconds)
    plan = _preflight(spec, seen, limits)
    if not isinstance(plan, ComputePlan) or plan.plan_hash != status.plan_hash:
        return plan
    if not status.path:
        return Succeed(f"nothing to do: every server and schema already runs {spec.target_version}")
    if spec.paused:
        return Pause("paused before the first change (spec.paused)", limits.idle_seconds)
    if spec.approval.required and (approval or "").strip() != status.plan_hash:
        return AwaitApproval(status.plan_hash, f"approve with the annotation upgrade.uwm.io/approve={status.plan_hash}",
                             limits.idle_seconds)
    replication = []
    for server in spec.servers():
        obs = seen.servers[server.name]
        if server.role is ReplicationRole.NONE:
            replication.append((server.name, ReplicationState.NONE))
        else:
            state = ReplicationState.ENABLED if obs.replication_enabled else ReplicationState.DISABLED
            replication.append((server.name, state))
    rotation = tuple((s.name, seen.servers[s.name].in_rotation) for s in spec.servers() if s.load_balanced)
    return RecordBaseline(tuple(replication), rotation)


# ---------------------------------------------------------------- the run


def _run(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime,
         limits: Limits) -> Action:
    recorded_path = [hop_of(status, i + 1) for i in range(len(status.path))]
    if not recorded_path or status.plan_hash != plan_hash(spec, recorded_path) \
            or recorded_path[-1].to_version != spec.target_version:
        return Fail(Reason.INVALID_SPEC, Where(status.current_hop or None),
                    "the spec no longer describes the plan being run (it changed after the upgrade started);"
                    " the estate was left as it is: " + describe_estate(spec, seen))
    if status.current_hop == 0:
        first = hop_of(status, 1)
        return AdvanceHop(1, first.from_version, first.to_version)
    ctx = Context(spec, status, seen, now, limits, catalog_of(spec), hop_of(status, status.current_hop))
    missing = _unobserved(spec, seen)
    if missing:
        for step in ctx.section():
            overdue = ctx.overdue(step, "cannot observe " + ", ".join(missing))
            if overdue is not None:
                return overdue
        return Wait(Reason.OBSERVATION_UNAVAILABLE, limits.poll_seconds, "cannot observe " + ", ".join(missing))
    drift = _drift(ctx)
    if drift:
        return ctx.failure(Reason.ESTATE_CHANGED, Where(ctx.hop.number), drift)
    return _guard(ctx, _next(ctx))


def _drift(ctx: Context) -> str | None:
    """Every server and schema must lie between the hop's two releases; anything else was done by someone else."""
    low, high = ctx.catalog.index(ctx.hop.from_version), ctx.catalog.index(ctx.hop.to_version)
    found = [(f"server {n}", o.version) for n, o in ctx.seen.servers.items()]
    found += [(f"database {n}", d.schema_version) for n, d in ctx.seen.databases.items()]
    outside = [f"{what} at {version}" for what, version in sorted(found)
               if version not in ctx.catalog or not low <= ctx.catalog.index(version) <= high]
    if not outside:
        return None
    return (f"outside hop {ctx.hop.number} ({ctx.hop.from_version} -> {ctx.hop.to_version}): "
            + ", ".join(outside) + "; the estate was changed by something other than this plan")


def _next(ctx: Context) -> Action:
    section = ctx.section()
    grouped = {s.server for s in section if s.name in GROUPS}
    for step in section:
        if step.state in DONE_STATES:
            continue
        if step.state is StepState.FAILED:
            return ctx.failure(Reason.STEP_FAILED, ctx.where(step), f"{step.key} failed: {step.message or 'no detail'}")
        if step.server in grouped and step.name in (*GROUPS, *GROUPS.values()):
            return _group(ctx, section)
        return _dispatch(ctx, step)
    if ctx.rolling_back:
        versions = sorted({o.version for o in ctx.seen.servers.values()})
        return FinishRollback(f"hop {ctx.hop.number} ({ctx.hop.from_version} -> {ctx.hop.to_version}) rolled back;"
                              f" the servers run {', '.join(versions)}")
    return _hop_done(ctx)


def _group(ctx: Context, section: tuple[StepStatus, ...]) -> Action:
    install_name = next(s.name for s in section if s.name in GROUPS)
    checks = {s.server: s for s in section if s.name is GROUPS[install_name]}
    pairs = [(s, checks[s.server]) for s in section if s.name is install_name]
    if ctx.rolling_back:
        def target(server: str) -> str:  # back to whatever schema the database has after its restore
            return ctx.database(ctx.spec.server(server).database).schema_version
    else:
        def target(server: str) -> str:
            return ctx.hop.to_version
    return server_group(ctx, pairs, target)


def _dispatch(ctx: Context, step: StepStatus) -> Action:
    if step.name in CLEAN_INSTALL_STEPS or (step.name in clean_install.OWN_STEPS
                                            and clean_install.is_clean_install(ctx.spec)):
        return clean_install.dispatch(ctx, step)
    match step.name:
        case StepName.DISABLE_REPLICATION | StepName.ROLLBACK_DISABLE_REPLICATION:
            return replication_off(ctx, step)
        case StepName.TAKE_OUT_OF_ROTATION | StepName.ROLLBACK_TAKE_OUT_OF_ROTATION:
            return rotation_out(ctx, step)
        case StepName.BACKUP_DATABASE:
            return backup(ctx, step)
        case StepName.INSTALL_FIRST_SERVER:
            return install(ctx, step, ctx.hop.to_version)
        case StepName.UPGRADE_SCHEMA:
            return schema(ctx, step)
        case StepName.VERIFY_SCHEMA:
            return verify_schema(ctx, step)
        case StepName.HEALTH_CHECK:
            return health(ctx, step, ctx.hop.to_version)
        case StepName.RESTORE_BACKUP:
            return restore(ctx, step)
        case StepName.BRING_INTO_ROTATION | StepName.ROLLBACK_BRING_INTO_ROTATION:
            return rotation_in(ctx, step)
        case StepName.RESTORE_REPLICATION | StepName.ROLLBACK_RESTORE_REPLICATION:
            return replication_on(ctx, step)
        case StepName.VERIFY_REPLICATION | StepName.ROLLBACK_VERIFY_REPLICATION:
            return replication_caught_up(ctx, step)
        case _:
            return Fail(Reason.STEP_FAILED, ctx.where(step), f"{step.key} is not a step this operator knows how to run")


def _hop_done(ctx: Context) -> Action:
    if ctx.hop.number < len(ctx.status.path):
        following = hop_of(ctx.status, ctx.hop.number + 1)
        return AdvanceHop(following.number, following.from_version, following.to_version)
    target = ctx.spec.target_version
    gone = {r.old.name for r in ctx.spec.replacements() if not ctx.server(r.old.name).online}  # replaced, offline
    behind = [f"server {n} at {o.version}" for n, o in sorted(ctx.seen.servers.items())
              if o.version != target and n not in gone]
    behind += [f"database {n} at {d.schema_version}" for n, d in sorted(ctx.seen.databases.items())
               if d.schema_version != target]
    if behind:
        return ctx.failure(Reason.ESTATE_CHANGED, Where(ctx.hop.number),
                           f"every step is done but not everything runs {target}: {', '.join(behind)}")
    route = " -> ".join([ctx.status.path[0].from_version, *(h.to_version for h in ctx.status.path)])
    return Succeed(f"the estate runs {target} ({route}, {len(ctx.status.path)} hop(s))")


def _guard(ctx: Context, action: Action) -> Action:
    """The last word of the guide: an effect that would break one of its rules is never handed out."""
    if not action.effect:
        return action
    found = violations(ctx.spec, ctx.seen, action)
    if not found:
        return action
    text = "; ".join(f"{v.rule}: {v.message}" for v in found)
    step = getattr(action, "step", None)
    if all(v.transient for v in found):
        return Wait(Reason.ESTATE_BUSY, ctx.limits.poll_seconds, f"not yet: {text}", (step,) if step else ())
    where = ctx.where(step) if step else Where(ctx.hop.number)
    return ctx.failure(Reason.GUIDE_RULE, where, f"refusing {describe(action)}: {text}")


# ---------------------------------------------------------------- pause


def _in_flight(status: UpgradePlanStatus, seen: Observations) -> str | None:
    """What must finish before the plan can stop safely (None: this is a safe point)."""
    busy = _busy(seen, locked_out=False)
    if busy is not None:
        return busy
    for step in status.steps:
        if step.name in (StepName.UPGRADE_SCHEMA, StepName.RESTORE_BACKUP) and step.state is StepState.RUNNING:
            return str(step.key)
    return None


def _pause_at_safe_point(status: UpgradePlanStatus, seen: Observations, action: Action, limits: Limits) -> Action:
    if isinstance(action, (Fail, BeginRollback, Idle, Succeed, FinishRollback, Pause, ComputePlan)):
        return action
    busy = _in_flight(status, seen)
    if busy is None:
        if isinstance(action, (CompleteStep, RecordBackup)):
            return action  # record what already finished, then stop
        return Pause("paused at a safe point (spec.paused); set it to false to resume here", limits.idle_seconds)
    if action.effect and not isinstance(action, (UpgradeSchema, RestoreBackup)):
        return Wait(Reason.PAUSING, limits.poll_seconds, f"pausing once this is over: {busy}")
    return action
