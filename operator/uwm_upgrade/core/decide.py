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
   are walked in order and the first unfinished one decides, through its row in the strategy's table
   (`strategies.py`; the handlers are in `steps.py` and `clean_install.py`); a hop done advances the hop,
   the last one ends in `Succeed` after checking every server and schema is at the target.
4. every effect is checked against the guide's rules (`guide.py`) before it is returned.
5. `spec.paused`: at the next safe point (nothing installing or migrating, no restore under way) the
   answer becomes `Pause`; until then only what completes the operation in flight is allowed.
6. `spec.maintenanceWindow` holds back the start of the run and of each hop, `spec.abort` stops the plan
   at the next safe point (`control.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from .actions import (
    Action,
    AdvanceHop,
    AwaitApproval,
    BeginRollback,
    Block,
    CompleteStep,
    ComputePlan,
    Effect,
    Fail,
    Final,
    FinishRollback,
    Idle,
    InstallServer,
    Pause,
    RecordBackup,
    RecordBaseline,
    RestoreBackup,
    Succeed,
    UpgradeSchema,
    Wait,
    describe,
)
from .context import BOUNDED_INSTALLS, DEFAULT_LIMITS, Context, Limits, describe_estate, hop_of
from .control import abort_at_safe_point, hold_for_window
from .enums import (
    DONE_STATES,
    TERMINAL_PHASES,
    MigrationStatus,
    Reason,
    ReplicationRole,
    ReplicationState,
    ServerPhase,
    StepName,
    StepState,
)
from .guide import in_place_forbidden, violations
from .hop_summary import MAX_PLANNED_STEPS, first_servers_of_hop_1
from .models import StepStatus, UpgradePlanSpec, UpgradePlanStatus
from .observations import Observations, Where
from .planning import (
    Hop,
    PlanningError,
    catalog_of,
    first_servers,
    leading_servers,
    lowest_version,
    plan_hash,
    plan_path,
)
from .safety import (
    Deviations,
    baseline_deviations,
    failed_migrations,
    identity_problems,
    partial_histories,
    recorded_deviations,
)
from .strategies import strategy_for

__all__ = ["DEFAULT_LIMITS", "Limits", "decide"]


def decide(spec: UpgradePlanSpec, status: UpgradePlanStatus, observations: Observations, now: datetime, *,
           approval: str | None = None, limits: Limits = DEFAULT_LIMITS) -> tuple[Action, ...]:
    """Every action the guide allows this plan now: one gate's answer (a plan, a wait, a failure, the end),
    or what each lane of the hop that may move asks for (`lanes.py`; at most `maxConcurrentServers`
    servers in flight). `approval` is the value of the `upgrade.uwm.io/approve` annotation."""
    if status.phase in TERMINAL_PHASES:
        return (Idle(f"the plan is {status.phase}; delete and recreate it to upgrade again"),)
    if not status.started:
        actions: tuple[Action, ...] = (_before_start(spec, status, observations, approval, limits),)
    else:
        actions = _run(spec, status, observations, now, limits)
    if spec.paused:
        actions = _pause_at_safe_point(status, observations, actions, limits)
    actions = _steered(actions, lambda a: hold_for_window(spec, status, observations, now, a, limits))
    if spec.abort is not None:
        busy = _in_flight(status, observations)
        actions = _steered(actions, lambda a: abort_at_safe_point(spec, status, observations, now, a, limits, busy))
    return actions


def _steered(actions: tuple[Action, ...], steer: Callable[[Action], Action]) -> tuple[Action, ...]:
    """`steer` (the maintenance window, an abort: `control.py`, one action at a time) applied to each
    action; a final answer it makes (an abort's failure) is the whole answer, once what already finished
    is recorded (as a pause does)."""
    steered = tuple(dict.fromkeys(steer(a) for a in actions))
    made = [a for a in steered if isinstance(a, Final) and a not in actions]
    if not made:
        return steered
    records = tuple(a for a in steered if isinstance(a, CompleteStep | RecordBackup))
    return records or (made[0],)


# ---------------------------------------------------------------- before the first change


def _unobserved(spec: UpgradePlanSpec, seen: Observations, replacements: bool = False) -> list[str]:
    """What the spec names but this pass did not observe, each with why (with `replacements`: the new
    servers of strategy CleanInstall too, which every step of a running plan may look at)."""
    servers = (*spec.servers(), *spec.replacement_servers()) if replacements else spec.servers()
    missing = [s.name for s in servers if s.name not in seen.servers]
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
    strangers = identity_problems(spec, seen)
    if strangers:
        return Fail(Reason.IDENTITY_MISMATCH, where, "; ".join(strangers))
    forbidden = in_place_forbidden(spec, seen)
    if forbidden:
        return Fail(Reason.IN_PLACE_FORBIDDEN, where, forbidden)
    failed = [f"{n} ({o.install.error or 'Failed'})" for n, o in sorted(seen.servers.items())
              if o.phase is ServerPhase.FAILED]
    if failed:
        return Fail(Reason.PREFLIGHT_FAILED, where, "servers report Failed: " + ", ".join(failed)
                    + f". {describe_estate(spec, seen)}")
    catalog = catalog_of(spec)
    damaged = failed_migrations(spec, seen) + partial_histories(spec, seen, catalog)
    if damaged:
        return Fail(Reason.PREFLIGHT_FAILED, where, "; ".join(damaged) + f". {describe_estate(spec, seen)}")
    busy = _busy(seen)
    if busy:
        return Wait(Reason.ESTATE_BUSY, limits.poll_seconds, f"waiting before planning: {busy}")
    versions = {f"server {s.name}": seen.servers[s.name].version for s in spec.servers()}
    versions |= {f"database {d.name}": seen.databases[d.name].schema_version for d in spec.databases}
    try:
        path = plan_path(catalog, versions, spec.target_version, spec.max_major_versions_per_step)
    except PlanningError as exc:
        return Fail(exc.reason, Where(0, StepName.PLAN), exc.message)
    strategy = strategy_for(spec)
    refused = strategy.preflight(spec, seen, path, catalog, limits)
    if refused is not None:
        return refused
    replaced = {r.old.database for r in spec.replacements()}
    leaders = {db: name for db, name in leading_servers(
        spec, {n: o.version for n, o in seen.servers.items()},
        {n: d.schema_version for n, d in seen.databases.items()}, catalog).items() if db not in replaced}
    steps = strategy.plan_steps(spec, path, leaders)
    if len(steps) > MAX_PLANNED_STEPS:
        return Fail(Reason.PLAN_TOO_LARGE, Where(0, StepName.PLAN), (
            f"{len(steps)} steps ({len(path)} hop(s) of {len(spec.servers())} servers and {len(spec.databases)}"
            f" database(s)): more than the {MAX_PLANNED_STEPS} a plan's status may hold within the API server's"
            " object size; upgrade fewer servers per plan, or fewer releases at a time (a nearer targetVersion)"))
    current = lowest_version(catalog, [o.version for o in seen.servers.values()])
    route = " -> ".join([path[0].from_version, *(h.to_version for h in path)]) if path else ""
    message = f"path {route} ({len(path)} hop(s))" if path else f"already at {spec.target_version}"
    default = first_servers(spec)
    message += "".join(f"; {name} upgrades {db} first (it already runs a release ahead of the schema)"
                       for db, name in leaders.items() if default[db] != name)
    found = baseline_deviations(spec, seen) if path else Deviations()
    if found:
        message += f"; found before the plan, and left so: {found.describe()}"
    digest = plan_hash(spec, path, seen.database_targets, leaders, (found.describe(),) if found else ())
    return ComputePlan(path, digest, steps, spec.target_version, current, message)


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
    approved = (approval or "").strip() == status.plan_hash
    unaccepted = baseline_deviations(spec, seen).unaccepted(spec)
    if unaccepted and not approved:  # maybe left so by a plan that halted: never taken as the new normal silently
        return AwaitApproval(status.plan_hash, (
            f"{unaccepted.describe()} before the plan: it would leave them so (its baseline). Put them back"
            f" first, or accept it: approve with the annotation upgrade.uwm.io/approve={status.plan_hash}, or set"
            " spec.baseline.acceptOutOfRotation / spec.baseline.acceptReplicationOff"), limits.idle_seconds,
            Reason.BASELINE_NOT_ACCEPTED)
    if spec.approval.required and not approved:
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
         limits: Limits) -> tuple[Action, ...]:
    gate = _gates(spec, status, seen, now, limits)
    if isinstance(gate, Action):
        return (gate,)
    return tuple(_guard(gate, action) for action in _next(gate))


def _gates(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime,
           limits: Limits) -> Action | Context:
    """What stops the run before any step is looked at (the spec changed, the estate unobserved or
    changed by someone else, the first hop not begun yet); else the context the steps are judged in."""
    recorded_path = [hop_of(status, i + 1) for i in range(len(status.path))]
    # The plan's Secrets unread (targets None, the estate unobserved): the hash cannot be judged; the
    # wait for the observations below says why.
    unjudged = seen.database_targets is None and bool(_unobserved(spec, seen))
    if not recorded_path or recorded_path[-1].to_version != spec.target_version or (
            not unjudged and status.plan_hash != _recorded_hash(spec, status, recorded_path, seen)):
        return Fail(Reason.INVALID_SPEC, Where(status.current_hop or None),
                    "the spec no longer describes the plan being run (it changed after the upgrade started);"
                    " the estate was left as it is: " + describe_estate(spec, seen, status))
    if not 0 <= status.current_hop <= len(recorded_path):
        return Fail(Reason.INVALID_STATUS, Where(), f"the status says hop {status.current_hop} of a plan of"
                    f" {len(recorded_path)} hop(s): it was not written by this operator; the estate was left as"
                    f" it is: {describe_estate(spec, seen)}")
    if status.current_hop == 0:
        first = hop_of(status, 1)
        return AdvanceHop(1, first.from_version, first.to_version)
    ctx = Context(spec, status, seen, now, limits, catalog_of(spec), hop_of(status, status.current_hop),
                  strategy_for(spec))
    missing = _unobserved(spec, seen, replacements=True)
    if missing:
        what = "cannot observe " + ", ".join(missing)
        for step in ctx.section():
            overdue = ctx.overdue(step, what)
            if overdue is not None:
                return overdue
        # Waited on by the step that is next: the wait counts against its timeout, never lasts for ever.
        nxt = next((step for step in ctx.section() if step.state not in DONE_STATES), None)
        return ctx.wait(Reason.OBSERVATION_UNAVAILABLE, what, *((nxt,) if nxt is not None else ()))
    strangers = identity_problems(spec, seen)
    if strangers:
        return ctx.failure(Reason.IDENTITY_MISMATCH, Where(ctx.hop.number), "; ".join(strangers))
    drift = _drift(ctx)
    if drift:
        return ctx.failure(Reason.ESTATE_CHANGED, Where(ctx.hop.number), drift)
    return ctx


def _recorded_hash(spec: UpgradePlanSpec, status: UpgradePlanStatus, path: list[Hop], seen: Observations) -> str:
    """The hash of the plan being run, from the spec and what the status recorded of the estate (the first
    servers of hop 1, what the baseline found): unequal to `status.planHash` when the spec changed."""
    replaced = {r.old.database for r in spec.replacements()}
    leaders = {db: server for db, server in first_servers_of_hop_1(status).items() if db not in replaced}
    found = recorded_deviations(spec, status)
    return plan_hash(spec, path, seen.database_targets, leaders, (found.describe(),) if found else ())


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


def _next(ctx: Context) -> tuple[Action, ...]:
    """What every step that may run now asks for, through its strategy's table: a failed step fails the
    hop; a section run in order hands its first unfinished step (or its whole group) to its handler; the
    lanes of an InPlace hop each hand theirs (`lanes.py`), the bounded group in one call."""
    section = ctx.section()
    failed = next((s for s in section if s.state is StepState.FAILED), None)
    if failed is not None:
        why = f"{failed.key} failed: {failed.message or 'no detail'}"
        return (ctx.failure(Reason.STEP_FAILED, ctx.where(failed), why),)
    ready, in_lanes = _ready(ctx, section)
    if not ready:
        if ctx.status.rolling_back:
            versions = sorted({o.version for o in ctx.seen.servers.values()})
            return (FinishRollback(f"hop {ctx.hop.number} ({ctx.hop.from_version} -> {ctx.hop.to_version}) rolled"
                                   f" back; the servers run {', '.join(versions)}"),)
        return (_hop_done(ctx),)
    if in_lanes:
        ctx = replace(ctx, ready=frozenset(s.key for s in ready))
    found: list[Action] = []
    groups: set[StepName] = set()
    for step in ready:
        group = ctx.group_install(step)
        if group is not None:
            if group in groups:
                continue  # its group was handed to its handler already: one call answers for all its servers
            groups.add(group)
        name = group or step.name
        kind = ctx.strategy.table.get(name)
        if kind is None:
            return (Fail(Reason.STEP_FAILED, ctx.where(step),
                         f"{step.key} is not a step strategy {ctx.strategy.name} knows how to run"),)
        answer = kind.handler(ctx, step)
        found += answer if isinstance(answer, tuple) else (answer,)
    ending = next((a for a in found if isinstance(a, Final | BeginRollback)), None)
    if ending is not None:  # a failure stops every lane: it alone is the answer, once the others landed
        if in_lanes and isinstance(ending, Fail) and (landing := _landing(ctx, ending)):
            records = tuple(a for a in found if isinstance(a, CompleteStep | RecordBackup))
            return (*records, Wait(Reason.HALTING, ctx.limits.poll_seconds,
                                   f"halting once this is over: {', '.join(landing)}. Then: {ending.message}"))
        return (ending,)
    return _bounded(ctx, tuple(dict.fromkeys(found)))


def _landing(ctx: Context, ending: Fail) -> list[str]:
    """What the other lanes still have under way when a step fails the hop: installs asked for and not over,
    schema upgrades running. A halt waits for them (each within its own step's timeout, past which it is
    no longer waited for), so that it stops at a safe point and its message describes the estate they
    leave, not the one they were changing (a server it called installing 2021.1 would then run 2023.1)."""
    out = []
    for step in ctx.section():
        if step.state is not StepState.RUNNING or ctx.timed_out(step):
            continue
        if step.name in BOUNDED_INSTALLS and step.server not in (None, ending.where.server):
            obs = ctx.seen.servers.get(step.server or "")
            if obs is not None and obs.busy:
                out.append(f"{step.server} installing")
        elif step.name is StepName.UPGRADE_SCHEMA and step.database not in (None, ending.where.database):
            db = ctx.seen.databases.get(step.database or "")
            if db is not None and db.lock_holder:
                out.append(f"the schema upgrade of {step.database}")
    return out


def _ready(ctx: Context, section: tuple[StepStatus, ...]) -> tuple[list[StepStatus], bool]:
    """The unfinished steps that may run now: those whose lane reached them (and True), or, in a section
    run in order, the first unfinished one (and False)."""
    lanes = None if ctx.status.rolling_back else ctx.strategy.lanes
    if lanes is None:
        first = next((s for s in section if s.state not in DONE_STATES), None)
        return ([first] if first is not None else []), False
    after = lanes(ctx.spec, section)
    state = {s.key: s.state for s in section}
    return [s for s in section if s.state not in DONE_STATES
            and all(state.get(k) in DONE_STATES for k in after.get(s.key, ()))], True


def _bounded(ctx: Context, actions: tuple[Action, ...]) -> tuple[Action, ...]:
    """At most `maxConcurrentServers` servers in flight (`Context.in_flight`): new installs beyond the bound
    wait, each database's first server before the others (it unlocks its database's other servers)."""
    busy = ctx.in_flight
    new = [a for a in actions if isinstance(a, InstallServer) and a.step.name in BOUNDED_INSTALLS
           and a.server not in busy]
    free = ctx.spec.max_concurrent_servers - len(busy)
    if len(new) <= free:
        return actions
    ranked = sorted(new, key=lambda a: a.step.name is not StepName.INSTALL_FIRST_SERVER)  # stable: plan order kept
    waiting = {id(a) for a in ranked[max(free, 0):]}  # by identity: comparing actions field by field was n*n
    return tuple(a for a in actions if id(a) not in waiting)


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
    if not isinstance(action, Effect):
        return action
    found = violations(ctx.spec, ctx.seen, action)
    if not found:
        return action
    text = "; ".join(f"{v.rule}: {v.message}" for v in found)
    if all(v.transient for v in found):
        return Wait(Reason.ESTATE_BUSY, ctx.limits.watch_seconds, f"not yet: {text}", (action.step,))
    return ctx.failure(Reason.GUIDE_RULE, ctx.where(action.step), f"refusing {describe(action)}: {text}")


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


def _pause_at_safe_point(status: UpgradePlanStatus, seen: Observations, actions: tuple[Action, ...],
                         limits: Limits) -> tuple[Action, ...]:
    if any(isinstance(a, Final | BeginRollback | Pause | ComputePlan) for a in actions):
        return actions
    busy = _in_flight(status, seen)
    if busy is None:
        done = tuple(a for a in actions if isinstance(a, CompleteStep | RecordBackup))
        # record what already finished, then stop
        return done or (Pause("paused at a safe point (spec.paused); set it to false to resume here",
                              limits.idle_seconds),)
    pausing = Wait(Reason.PAUSING, limits.poll_seconds, f"pausing once this is over: {busy}")
    kept = tuple(pausing if isinstance(a, Effect) and not isinstance(a, UpgradeSchema | RestoreBackup) else a
                 for a in actions)
    return tuple(dict.fromkeys(kept))
