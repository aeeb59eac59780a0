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
    ClosePortal,
    DisableReplication,
    InstallServer,
    RecordBackup,
    RestoreBackup,
    RestoreReplication,
    TakeOutOfRotation,
    UpgradeSchema,
)
from .baseline import replicating, replication_to_restore, rotation_to_restore
from .context import Actions, Context
from .enums import (
    DONE_STATES,
    MigrationStatus,
    Reason,
    ReplicationRole,
    ServerPhase,
    StepName,
    StepState,
)
from .models import StepStatus
from .observations import ServerObservation
from .planning import backup_id
from .safety import schema_touched, served
from .status import stamp


def _done(step: StepStatus | None) -> bool:
    return step is not None and step.state in DONE_STATES


# ---------------------------------------------------------------- replication and rotation


def replication_off(ctx: Context, step: StepStatus) -> Action:
    servers = replicating(ctx.spec)
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
    wanted = [s.name for s in rotation_to_restore(ctx.spec, ctx.status)]
    if not wanted:
        return ctx.complete(step, "no load-balanced server was in rotation before the plan", skipped=True)
    missing = tuple(n for n in wanted if not ctx.server(n).in_rotation)
    if not missing:
        return ctx.complete(step, f"back in rotation: {', '.join(wanted)}")
    return ctx.overdue(step, f"{', '.join(missing)} not back in rotation") or BringIntoRotation(step.key, missing)


def replication_on(ctx: Context, step: StepStatus, *, on_replacements: bool = False) -> Action:
    """Replication enabled again as before the plan (with `on_replacements`: on the new servers that
    replace those that had it, strategy CleanInstall)."""
    wanted = tuple(s.name for s in replication_to_restore(ctx.spec, ctx.status, on_replacements=on_replacements))
    if not wanted:
        return ctx.complete(step, "replication was not enabled before the plan", skipped=True)
    off = tuple(n for n in wanted if not ctx.server(n).replication_enabled)
    if not off:
        return ctx.complete(step, f"replication enabled again, as before the plan: {', '.join(wanted)}")
    return ctx.overdue(step, f"replication still off on {', '.join(off)}") or RestoreReplication(step.key, off)


def replication_caught_up(ctx: Context, step: StepStatus, *, on_replacements: bool = False) -> Action:
    wanted = replication_to_restore(ctx.spec, ctx.status, on_replacements=on_replacements)
    subscribers = [s.name for s in wanted if s.role is ReplicationRole.SUBSCRIBER]
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


def _restore_with(ctx: Context, name: str) -> str:
    recorded = ctx.status.database(name)
    saved = recorded.last_backup if recorded else None
    if saved is not None and saved.verified and saved.hop == ctx.hop.number:
        return f"; the verified backup {saved.id} taken before this hop holds {name} as it was"
    return "; no verified backup of it was taken in this hop"


def schema(ctx: Context, step: StepStatus) -> Action:
    """The first server's UPDATE SELECTED for its database, requested once (`requested_at`): success is
    the portal's Upgrade Successful with the schema at the target; a Failed result is final, whoever
    asked for it; a request the portal shows no trace of is never sent again automatically."""
    server, name, target = step.server or "", step.database or "", ctx.hop.to_version
    db = ctx.database(name)
    requested = step.requested_at is not None
    if db.migration is MigrationStatus.FAILED:  # its evidence stays until a human closes it: never migrated over
        by = db.migration_by or server
        whose = "" if requested or step.state is not StepState.PENDING else ", not requested by this plan"
        return ctx.failure(Reason.MIGRATION_FAILED, ctx.where(step),
                           f"the schema upgrade of {name} to {target} through {by} failed: the portal says Failed"
                           f" ({db.migration_error or 'no error given'}){whose} (schema at {db.schema_version},"
                           f" maybe half migrated){_restore_with(ctx, name)}")
    busy = _migrating(ctx, name)
    if busy is not None:
        reason = Reason.SCHEMA_LOCKED if db.lock_holder not in (None, server) else Reason.MIGRATING_SCHEMA
        return ctx.overdue(step, busy) or ctx.wait(reason, busy, step)
    if db.schema_version == target and db.migration is MigrationStatus.UPGRADE_SUCCESSFUL:
        return ctx.complete(step, f"schema of {name} at {target}; the portal says Upgrade Successful")
    if requested:
        return ctx.failure(Reason.MIGRATION_UNCONFIRMED, ctx.where(step),
                           f"the schema upgrade of {name} to {target} was requested through {server} at"
                           f" {stamp(step.requested_at)}, but the portal says {db.migration} and the schema is at"
                           f" {db.schema_version} (no lock): the migration cannot be confirmed, and a migration is"
                           f" never requested twice automatically. Check the portal of {server} and the history of"
                           f" {name} (uwm_migrations); if no migration ran, delete the plan and create it again")
    if db.schema_version == target:  # at the target before this plan asked: done by hand, or an earlier run
        return ctx.complete(step, f"schema of {name} already at {target}: not migrated again", skipped=True)
    if ctx.server(server).version != target:
        return ctx.failure(Reason.ESTATE_CHANGED, ctx.where(step),
                           f"{server} runs {ctx.server(server).version}, not {target}, so it cannot upgrade {name}")
    gate = backup_id(ctx.status.plan_hash, ctx.status.started_at, ctx.hop.number) \
        if ctx.spec.backup.enabled and ctx.status.plan_hash and ctx.status.started_at else None
    # The hop's backup (whatever the status recorded of it): the adapter verifies it again before migrating.
    return ctx.overdue(step, f"schema of {name} still at {db.schema_version}") or \
        UpgradeSchema(step.key, server, name, target, gate)


def _migration_step(ctx: Context, name: str) -> StepStatus | None:
    return next((s for s in ctx.status.steps if s.name is StepName.UPGRADE_SCHEMA and s.hop == ctx.hop.number
                 and s.database == name), None)


def verify_schema(ctx: Context, step: StepStatus) -> Action:
    """The schema at the target and no Database Updates Required; the portal's Upgrade Successful CLOSEd,
    as the guide's last step of a database upgrade says."""
    name, target = step.database or "", ctx.hop.to_version
    db = ctx.database(name)
    busy = _migrating(ctx, name)
    if db.migration is MigrationStatus.FAILED:
        return ctx.failure(Reason.MIGRATION_FAILED, ctx.where(step),
                           f"the portal reports a failed schema upgrade of {name} after its upgrade to {target}"
                           f" ({db.migration_error or 'no error given'}){_restore_with(ctx, name)}")
    if db.schema_version != target and busy is None:
        return ctx.failure(Reason.SCHEMA_NOT_VERIFIED, ctx.where(step),
                           f"the schema of {name} is {db.schema_version} after its upgrade, not {target}")
    if busy is None and db.migration is MigrationStatus.UPGRADE_SUCCESSFUL:
        migration = _migration_step(ctx, name)
        via = migration.server if migration is not None and migration.server else ctx.spec.servers_of(name)[0].name
        return ctx.overdue(step, f"the portal of {via} still says Upgrade Successful") or \
            ClosePortal(step.key, via, name)
    if busy is None and not db.updates_required:
        return ctx.complete(step, f"{name} at {target}; no Database Updates Required")
    waiting = busy or f"the portal still lists Database Updates Required for {name}"
    return ctx.overdue(step, waiting) or ctx.wait(Reason.AWAITING_SCHEMA, waiting, step)


def restore(ctx: Context, step: StepStatus) -> Action:
    name = step.database or ""
    if not schema_touched(_migration_step(ctx, name)):
        return ctx.complete(step, f"the schema of {name} was not changed in hop {ctx.hop.number}", skipped=True)
    recorded = ctx.status.database(name)
    backup_record = recorded.last_backup if recorded else None
    if backup_record is None or backup_record.hop != ctx.hop.number or not backup_record.verified:
        why = "spec.backup.enabled is false" if not ctx.spec.backup.enabled else "none was recorded"
        return ctx.failure(Reason.ROLLBACK_IMPOSSIBLE, ctx.where(step),
                           f"the schema of {name} may have changed in hop {ctx.hop.number} and there is no verified"
                           f" backup of it to restore ({why})")
    unsafe = served(ctx.status, ctx.hop.number, [name])
    if unsafe:
        return ctx.failure(Reason.ROLLBACK_UNSAFE, ctx.where(step),
                           f"{'; '.join(unsafe)}: restoring backup {backup_record.id} would lose what its clients"
                           " wrote since; not restored")
    return ctx.overdue(step, f"restore of {name} from {backup_record.id}") or \
        RestoreBackup(step.key, name, backup_record.id)


# ---------------------------------------------------------------- servers


def _installed(obs: ServerObservation, version: str) -> bool:
    return obs.version == version and obs.phase not in (ServerPhase.INSTALLING, ServerPhase.FAILED)


def _install_failure(ctx: Context, step: StepStatus, version: str) -> Action | None:
    obs = ctx.server(step.server or "")
    # An install error is this step's only when it is an install of this step's release: a server left
    # Failed by an install of another release (the forward install, when a rollback reinstalls the previous
    # one) is asked again, never failed on that stale error. `Failed` without an install error means the
    # server cannot reach its database: that may pass, so it is waited for (within the step's timeout).
    # After a retry (spec.retry) the failed install is the one retried, not a new failure.
    ours = obs.install.target_version == version and (step.state is StepState.RUNNING
                                                      or (obs.phase is ServerPhase.FAILED and step.retried_at is None))
    if obs.install.error and obs.phase is not ServerPhase.INSTALLING and ours:
        return ctx.failure(Reason.INSTALL_FAILED, ctx.where(step),
                           f"installing {version} on {obs.name} failed: {obs.install.error}")
    return None


def install(ctx: Context, step: StepStatus) -> Action:
    """One server, on its own, to the hop's release: the first server of a database, or a new one."""
    obs, version = ctx.server(step.server or ""), ctx.hop.to_version
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
    if (page is not None and page.ok and page.consecutive >= need and page.version == version
            and obs.version == version and obs.phase is ServerPhase.RUNNING):
        return f"{server} at {version}: status page confirmed {page.consecutive} time(s) in a row"
    return None


def _unconfirmed(ctx: Context, server: str, version: str) -> str:
    """Why `server`'s status page does not confirm `version` yet (what the health step's message says)."""
    obs, page = ctx.server(server), ctx.seen.health.get(server)
    if page is None:
        return "its status page was not read"
    if not page.ok:
        return page.detail or "its status page does not confirm"
    if page.version != version:
        return f"its status page shows version {page.version}, not {version}"
    if obs.version != version or obs.phase is not ServerPhase.RUNNING:
        return f"the server reports {obs.version} {obs.phase}"
    last = f"; it last failed: status page {page.last_failure}" if page.last_failure else ""
    return (f"its status page confirmed {page.consecutive} of {ctx.spec.health_check.success_threshold}"
            f" time(s) in a row{last}")


def _health_failure(ctx: Context, step: StepStatus, version: str) -> Action | None:
    obs = ctx.server(step.server or "")
    why = _unconfirmed(ctx, obs.name, version)
    if obs.phase is ServerPhase.FAILED and obs.install.error:
        return ctx.failure(Reason.HEALTH_CHECK_FAILED, ctx.where(step),
                           f"{obs.name} reports Failed: {obs.install.error} ({why})")
    if ctx.timed_out(step):
        return ctx.failure(Reason.HEALTH_CHECK_FAILED, ctx.where(step),
                           f"the status page of {obs.name} did not confirm {ctx.spec.health_check.success_threshold}"
                           f" time(s) in a row within {ctx.timeout_of(step):.0f}s: {why}")
    return None


def _page_seconds(ctx: Context, servers: list[str]) -> float | None:
    """How soon to look again at these status pages: after `healthCheck.periodSeconds` when one of their
    servers runs (its page is read, and read again a period later); else when the estate changes (its
    agent says it settled: `None`, the wait's default)."""
    running = any(ctx.server(n).phase is ServerPhase.RUNNING for n in servers)
    return float(ctx.spec.health_check.period_seconds) if running else None


def health(ctx: Context, step: StepStatus) -> Action | Actions:
    """One server's status page until it confirms `successThreshold` times in a row, or its timeout; a
    server upgraded with the others (`upgrade_group`) is checked with them."""
    if step.server in ctx.grouped:
        return upgrade_group(ctx, step)
    server, version = step.server or "", ctx.hop.to_version
    confirmed = _confirmed(ctx, server, version)
    if confirmed:
        return ctx.complete(step, confirmed)
    return _health_failure(ctx, step, version) or ctx.wait(
        Reason.AWAITING_HEALTH, f"waiting for the status page of {server}: {_unconfirmed(ctx, server, version)}",
        step, seconds=_page_seconds(ctx, [server]))


def _pairs(ctx: Context, install_name: StepName, check_name: StepName) -> list[tuple[StepStatus, StepStatus]]:
    """Each server's install and health steps, of the servers whose lane reached them."""
    section = ctx.section()
    checks = {s.server: s for s in section if s.name is check_name}
    return [(s, checks[s.server]) for s in section if s.name is install_name
            and (ctx.is_ready(s) or ctx.is_ready(checks[s.server]))]


def upgrade_group(ctx: Context, step: StepStatus) -> Actions:
    """The servers after each database's first, to the hop's release (`server_group`)."""
    return server_group(ctx, _pairs(ctx, StepName.INSTALL_SERVER, StepName.HEALTH_CHECK),
                        lambda server: ctx.hop.to_version)


def reinstall_group(ctx: Context, step: StepStatus) -> Actions:
    """Rolling back: every server back to whatever schema its database has after its restore."""
    return server_group(ctx, _pairs(ctx, StepName.REINSTALL_PREVIOUS, StepName.ROLLBACK_HEALTH_CHECK),
                        lambda server: ctx.database(ctx.spec.server(server).database).schema_version)


def server_group(ctx: Context, pairs: list[tuple[StepStatus, StepStatus]], target: Callable[[str], str]) -> Actions:
    """Install-then-health-check for many servers at once, in one answer: every completion, every install
    to ask for (a new one, or one whose request was lost), and one wait per kind of thing waited for.
    A failure is the whole answer. `decide()` keeps at most `maxConcurrentServers` servers in flight
    (`Context.in_flight`: from the request of its install until its health check confirms); it records
    completions before it lets new installs start, so a finished server frees its place first.
    """
    for installing, checking in pairs:
        for step in (installing, checking):
            if step.state is StepState.FAILED:
                return (ctx.failure(Reason.STEP_FAILED, ctx.where(step), f"{step.key}: {step.message or 'failed'}"),)
    found: list[Action] = []
    checks: list[StepStatus] = []
    running: list[StepStatus] = []
    busy: list[StepStatus] = []
    for installing, checking in pairs:
        name = installing.server or ""
        version, obs = target(name), ctx.server(name)
        if not _done(installing):
            if _installed(obs, version):
                found.append(ctx.complete(installing, f"{name} runs {version} ({obs.phase})"))
            elif installing.state is StepState.RUNNING:
                failed = _install_failure(ctx, installing, version) or ctx.overdue(installing, f"{name} installing")
                if failed is not None:
                    return (failed,)
                if obs.busy:
                    running.append(installing)
                else:
                    # Requested, yet neither under way nor done: the request was lost (a crash between
                    # marking the step and sending it). Asking again is safe: the agent answers 409 busy.
                    found.append(InstallServer(installing.key, name, version))
            elif obs.busy:
                busy.append(installing)  # busy with something else (an install of another release, say)
            else:
                found.append(InstallServer(installing.key, name, version))
        elif not _done(checking):
            confirmed = _confirmed(ctx, name, version)
            if confirmed:
                found.append(ctx.complete(checking, confirmed))
                continue
            failed = _health_failure(ctx, checking, version)
            if failed is not None:
                return (failed,)
            checks.append(checking)
    if checks:
        found.append(ctx.wait(Reason.AWAITING_HEALTH, "waiting for the status pages of " + "; ".join(
            f"{c.server}: {_unconfirmed(ctx, c.server or '', target(c.server or ''))}" for c in checks), *checks,
            seconds=_page_seconds(ctx, [c.server or "" for c in checks])))
    if running:
        found.append(ctx.wait(Reason.INSTALLING, "installing " + ", ".join(i.server or "" for i in running),
                              *running))
    if busy:
        # Their install steps are waited on, so each wait counts against that step's timeout, never lasts for ever.
        found.append(ctx.wait(Reason.ESTATE_BUSY, "waiting for " + ", ".join(
            f"{i.server} ({ctx.server(i.server or '').phase})" for i in busy) + " to finish what they are doing",
            *busy))
    return tuple(found)
