"""What to do for one step of a hop, judged from the observed estate first and the recorded status second.

Every handler follows the same order, which is what makes a crash at any instant safe to resume:
1. done? If the estate already shows the step's effect (replication off, the release installed, the
   schema at the target, the backup with this hop's id present), record it and move on, whatever the
   status said (a step left Running by a crash is simply finished). Nothing is ever done twice.
2. failed? A server in `Failed`, a migration the portal reports failed: route by failure policy.
3. too slow? A Running step past its timeout fails, saying what it was still waiting for.
4. in flight? An install or a migration under way is waited for, never requested again.
5. otherwise act: ask for the effect (idempotent on the estate's side as well).
"""

from __future__ import annotations

from collections.abc import Callable

from .actions import (
    Action,
    BackupDatabase,
    BringIntoRotation,
    DisableReplication,
    InstallServer,
    RecordBackup,
    RestoreBackup,
    RestoreReplication,
    TakeOutOfRotation,
    UpgradeSchema,
)
from .context import Context
from .enums import (
    DONE_STATES,
    MigrationStatus,
    Reason,
    ReplicationRole,
    ReplicationState,
    ServerPhase,
    StepName,
    StepState,
)
from .models import StepKey, StepStatus
from .observations import ServerObservation
from .planning import backup_id, first_servers


def _done(step: StepStatus | None) -> bool:
    return step is not None and step.state in DONE_STATES


# ---------------------------------------------------------------- replication and rotation


def replication_off(ctx: Context, step: StepStatus) -> Action:
    servers = ctx.replicating()
    enabled = tuple(s.name for s in servers if ctx.server(s.name).replication_enabled)
    if not enabled:
        return ctx.complete(step, "replication is off on " + ", ".join(s.name for s in servers))
    return ctx.overdue(step, f"replication still enabled on {', '.join(enabled)}") or \
        DisableReplication(step.key, enabled)


def rotation_out(ctx: Context, step: StepStatus) -> Action:
    pool = [s.name for s in ctx.spec.servers() if s.load_balanced]
    serving = tuple(n for n in pool if ctx.server(n).in_rotation)
    if serving:
        return ctx.overdue(step, f"{', '.join(serving)} still in rotation") or TakeOutOfRotation(step.key, serving)
    draining = [f"{n} ({ctx.server(n).active_requests})" for n in pool if ctx.server(n).active_requests > 0]
    if draining:
        return ctx.overdue(step, f"requests still active on {', '.join(draining)}") or \
            ctx.wait(Reason.DRAINING, f"out of rotation, draining requests: {', '.join(draining)}", step)
    return ctx.complete(step, f"out of rotation, no traffic: {', '.join(pool)}")


def rotation_in(ctx: Context, step: StepStatus) -> Action:
    wanted = []
    for server in ctx.spec.servers():
        recorded = ctx.status.server(server.name)
        if server.load_balanced and (recorded is None or recorded.online_before is not False):
            wanted.append(server.name)
    if not wanted:
        return ctx.complete(step, "no load-balanced server was in rotation before the plan", skipped=True)
    missing = tuple(n for n in wanted if not ctx.server(n).in_rotation)
    if not missing:
        return ctx.complete(step, f"back in rotation: {', '.join(wanted)}")
    return ctx.overdue(step, f"{', '.join(missing)} not back in rotation") or BringIntoRotation(step.key, missing)


def _enabled_before(ctx: Context) -> tuple[str, ...]:
    names = []
    for server in ctx.replicating():
        recorded = ctx.status.server(server.name)
        if recorded is not None and recorded.replication_before is ReplicationState.ENABLED:
            names.append(server.name)
    return tuple(names)


def replication_on(ctx: Context, step: StepStatus) -> Action:
    wanted = _enabled_before(ctx)
    if not wanted:
        return ctx.complete(step, "replication was not enabled before the plan", skipped=True)
    off = tuple(n for n in wanted if not ctx.server(n).replication_enabled)
    if not off:
        return ctx.complete(step, f"replication enabled again, as before the plan: {', '.join(wanted)}")
    return ctx.overdue(step, f"replication still off on {', '.join(off)}") or RestoreReplication(step.key, off)


def replication_caught_up(ctx: Context, step: StepStatus) -> Action:
    wanted = set(_enabled_before(ctx))
    subscribers = [s.name for s in ctx.replicating() if s.role is ReplicationRole.SUBSCRIBER and s.name in wanted]
    if not subscribers:
        return ctx.complete(step, "no subscriber replicates", skipped=True)
    behind = [n for n in subscribers if not ctx.server(n).caught_up]
    if not behind:
        return ctx.complete(step, f"subscribers caught up: {', '.join(subscribers)}")
    return ctx.overdue(step, f"{', '.join(behind)} not caught up") or \
        ctx.wait(Reason.CATCHING_UP, f"waiting for {', '.join(behind)} to catch up", step)


# ---------------------------------------------------------------- databases


def backup(ctx: Context, step: StepStatus) -> Action:
    name = step.database or ""
    assert ctx.status.plan_hash is not None and ctx.status.started_at is not None, "backups come after the baseline"
    expected = backup_id(ctx.status.plan_hash, ctx.status.started_at, ctx.hop.number)
    observed = ctx.database(name).backup(expected)
    if observed is not None and observed.verified:
        return RecordBackup(step.key, observed)
    return ctx.overdue(step, f"no verified backup {expected} of {name}") or BackupDatabase(step.key, name, expected)


def _migrating(ctx: Context, database: str) -> str | None:
    db = ctx.database(database)
    if db.lock_holder is not None:
        return f"{db.lock_holder} holds the schema lock of {database}"
    if db.migration is MigrationStatus.UPGRADING:
        return f"the portal is upgrading {database}"
    for server in ctx.spec.servers_of(database):
        if ctx.server(server.name).phase is ServerPhase.MIGRATING_SCHEMA:
            return f"{server.name} is migrating the schema of {database}"
    return None


def schema(ctx: Context, step: StepStatus) -> Action:
    server, name, target = step.server or "", step.database or "", ctx.hop.to_version
    db = ctx.database(name)
    busy = _migrating(ctx, name)
    if db.schema_version == target and busy is None:
        return ctx.complete(step, f"schema of {name} at {target}", skipped=True)
    # A portal status Failed counts only once we asked: it stays Failed until CLOSE, even across runs.
    if step.state is StepState.RUNNING and db.migration is MigrationStatus.FAILED:
        recorded = ctx.status.database(name)
        saved = recorded.last_backup if recorded else None
        restore_with = (f"; the verified backup {saved.id} taken before this hop holds {name} as it was"
                        if saved is not None and saved.verified and saved.hop == ctx.hop.number
                        else "; no verified backup of it was taken in this hop")
        return ctx.failure(Reason.MIGRATION_FAILED, ctx.where(step),
                           f"the schema upgrade of {name} to {target} through {server} failed"
                           f" (schema at {db.schema_version}, maybe half migrated){restore_with}")
    if busy is not None:
        reason = Reason.SCHEMA_LOCKED if db.lock_holder not in (None, server) else Reason.MIGRATING_SCHEMA
        return ctx.overdue(step, busy) or ctx.wait(reason, busy, step)
    if ctx.server(server).version != target:
        return ctx.failure(Reason.ESTATE_CHANGED, ctx.where(step),
                           f"{server} runs {ctx.server(server).version}, not {target}, so it cannot upgrade {name}")
    return ctx.overdue(step, f"schema of {name} still at {db.schema_version}") or \
        UpgradeSchema(step.key, server, name, target)


def verify_schema(ctx: Context, step: StepStatus) -> Action:
    name, target = step.database or "", ctx.hop.to_version
    db = ctx.database(name)
    busy = _migrating(ctx, name)
    if db.schema_version == target and not db.updates_required and busy is None:
        return ctx.complete(step, f"{name} at {target}; no Database Updates Required")
    if db.schema_version != target and busy is None:
        return ctx.failure(Reason.SCHEMA_NOT_VERIFIED, ctx.where(step),
                           f"the schema of {name} is {db.schema_version} after its upgrade, not {target}")
    waiting = busy or f"the portal still lists Database Updates Required for {name}"
    return ctx.overdue(step, waiting) or ctx.wait(Reason.AWAITING_SCHEMA, waiting, step)


def restore(ctx: Context, step: StepStatus) -> Action:
    name = step.database or ""
    first = first_servers(ctx.spec)[name]
    migration = ctx.status.step(StepKey(StepName.UPGRADE_SCHEMA, ctx.hop.number, first, name))
    if migration is None or migration.state in (StepState.PENDING, StepState.SKIPPED):
        return ctx.complete(step, f"the schema of {name} was not changed in hop {ctx.hop.number}", skipped=True)
    recorded = ctx.status.database(name)
    backup_record = recorded.last_backup if recorded else None
    if backup_record is None or backup_record.hop != ctx.hop.number or not backup_record.verified:
        why = "spec.backup.enabled is false" if not ctx.spec.backup.enabled else "none was recorded"
        return ctx.failure(Reason.ROLLBACK_IMPOSSIBLE, ctx.where(step),
                           f"the schema of {name} may have changed in hop {ctx.hop.number} and there is no verified"
                           f" backup of it to restore ({why})")
    return ctx.overdue(step, f"restore of {name} from {backup_record.id}") or \
        RestoreBackup(step.key, name, backup_record.id)


# ---------------------------------------------------------------- servers


def _installed(obs: ServerObservation, version: str) -> bool:
    return obs.version == version and obs.phase not in (ServerPhase.INSTALLING, ServerPhase.FAILED)


def _install_failure(ctx: Context, step: StepStatus, version: str) -> Action | None:
    obs = ctx.server(step.server or "")
    ours = step.state is StepState.RUNNING and obs.install.target_version == version
    # `Failed` without an install error means the server cannot reach its database: that may pass, so it
    # is waited for (within the step's timeout); an install error is final.
    if obs.install.error and obs.phase is not ServerPhase.INSTALLING and (ours or obs.phase is ServerPhase.FAILED):
        return ctx.failure(Reason.INSTALL_FAILED, ctx.where(step),
                           f"installing {version} on {obs.name} failed: {obs.install.error}")
    return None


def install(ctx: Context, step: StepStatus, version: str) -> Action:
    """One server, on its own: the first server of a database."""
    obs = ctx.server(step.server or "")
    if _installed(obs, version):
        return ctx.complete(step, f"{obs.name} runs {version} ({obs.phase})")
    failed = _install_failure(ctx, step, version)
    if failed is not None:
        return failed
    if obs.phase is ServerPhase.INSTALLING:
        return ctx.overdue(step, f"{obs.name} still installing") or \
            ctx.wait(Reason.INSTALLING, f"{obs.name} installing {obs.install.target_version or version}", step)
    return ctx.overdue(step, f"{obs.name} runs {obs.version}") or InstallServer(step.key, obs.name, version)


def _confirmed(ctx: Context, server: str, version: str) -> str | None:
    obs, page = ctx.server(server), ctx.seen.health.get(server)
    need = ctx.spec.health_check.success_threshold
    if (page is not None and page.ok and page.consecutive >= need and page.version in (None, version)
            and obs.version == version and obs.phase is ServerPhase.RUNNING):
        return f"{server} at {version}: status page confirmed {page.consecutive} time(s) in a row"
    return None


def _health_failure(ctx: Context, step: StepStatus) -> Action | None:
    obs, page = ctx.server(step.server or ""), ctx.seen.health.get(step.server or "")
    detail = f" (status page: {page.detail})" if page is not None and page.detail else ""
    if obs.phase is ServerPhase.FAILED and obs.install.error:
        return ctx.failure(Reason.HEALTH_CHECK_FAILED, ctx.where(step),
                           f"{obs.name} reports Failed: {obs.install.error}{detail}")
    if ctx.timed_out(step):
        return ctx.failure(Reason.HEALTH_CHECK_FAILED, ctx.where(step),
                           f"the status page of {obs.name} did not confirm {ctx.spec.health_check.success_threshold}"
                           f" time(s) in a row within {ctx.timeout_of(step):.0f}s{detail}")
    return None


def health(ctx: Context, step: StepStatus, version: str) -> Action:
    """One server's status page until it confirms `successThreshold` times in a row, or its timeout."""
    confirmed = _confirmed(ctx, step.server or "", version)
    if confirmed:
        return ctx.complete(step, confirmed)
    return _health_failure(ctx, step) or ctx.wait(
        Reason.AWAITING_HEALTH, f"waiting for the status page of {step.server}", step,
        seconds=float(ctx.spec.health_check.period_seconds))


def server_group(ctx: Context, pairs: list[tuple[StepStatus, StepStatus]], target: Callable[[str], str]) -> Action:
    """Install-then-health-check for many servers, at most `maxConcurrentServers` in flight at once.

    A server is in flight from the moment its install is requested until its health check confirms.
    Completions are recorded first, then failures, then new installs, then waits, so a finished server
    frees its place before the next one starts.
    """
    for installing, checking in pairs:
        for step in (installing, checking):
            if step.state is StepState.FAILED:
                return ctx.failure(Reason.STEP_FAILED, ctx.where(step), f"{step.key}: {step.message or 'failed'}")
    for installing, checking in pairs:
        name = installing.server or ""
        if not _done(installing) and _installed(ctx.server(name), target(name)):
            return ctx.complete(installing, f"{name} runs {target(name)} ({ctx.server(name).phase})")
        if _done(installing) and not _done(checking) and (confirmed := _confirmed(ctx, name, target(name))):
            return ctx.complete(checking, confirmed)
    in_flight: list[str] = []
    for installing, checking in pairs:
        name = installing.server or ""
        if not _done(installing) and installing.state is StepState.RUNNING:
            failed = _install_failure(ctx, installing, target(name)) or ctx.overdue(installing, f"{name} installing")
            if failed is not None:
                return failed
            if not ctx.server(name).busy:
                # Requested, yet neither under way nor done: the request was lost (a crash between marking
                # the step and sending it). Asking again is safe: the agent answers 409 busy while installing.
                return InstallServer(installing.key, name, target(name))
            in_flight.append(name)
        elif _done(installing) and not _done(checking):
            failed = _health_failure(ctx, checking)
            if failed is not None:
                return failed
            in_flight.append(name)
    if len(in_flight) < ctx.spec.max_concurrent_servers:
        for installing, _ in pairs:
            name = installing.server or ""
            if installing.state is StepState.PENDING and not ctx.server(name).busy:
                return InstallServer(installing.key, name, target(name))
    checks = [c for i, c in pairs if _done(i) and not _done(c)]
    if checks:
        return ctx.wait(Reason.AWAITING_HEALTH, "waiting for the status pages of "
                        + ", ".join(c.server or "" for c in checks), *checks,
                        seconds=float(ctx.spec.health_check.period_seconds))
    running = [i for i, _ in pairs if not _done(i) and i.state is StepState.RUNNING]
    if running:
        return ctx.wait(Reason.INSTALLING, "installing " + ", ".join(i.server or "" for i in running), *running)
    busy = [i.server or "" for i, _ in pairs if not _done(i)]
    return ctx.wait(Reason.ESTATE_BUSY, "waiting for " + ", ".join(busy) + " to finish what they are doing")
