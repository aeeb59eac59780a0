"""Look at the estate before every decision: agent states, databases, portals, status pages, backups.

All servers and databases are observed concurrently; whatever cannot be observed becomes an
`ObservationGap` (the core then waits rather than guesses). What the next decision needs, and no more:
- every server's agent state: as its long poll last brought it (`watch.py`: current to the moment), or
  asked for when that is not known (a watcher that failed, a server this plan just asked to change);
- every database's schema, lock, history and backups, from the database itself, every turn;
- a database's Configuration Portal while the plan has not started, while a hop rolls back, and while
  the current hop's schema upgrade or its verification of that database is not done; otherwise as last
  read (nothing else changes it);
- a status page: every server's before the plan starts (the preflight's look at their health); then
  those of the servers whose health check the current hop waits for, once their agent says they run
  (before that the page cannot confirm); the others keep what was last read, or none.
Health confirmations are counted here, per server, in memory, by the core's fold `HealthStreak` (a streak
restarts when the page fails or shows another release); a page is polled at most once per
`healthCheck.periodSeconds`. After an operator restart the count starts again, which can only ask for
more confirmations, never fewer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from pydantic import ValidationError

from ..adapters.database import Database, DatabaseError
from ..adapters.servers import AgentState, ClientsInfo, PortalStatus, ServerClient, ServerError
from ..core.enums import DONE_STATES, MigrationStatus, ReplicationRole, ServerKind, ServerPhase, StepName
from ..core.models import Server, UpgradePlanSpec, UpgradePlanStatus
from ..core.observations import (
    BackupObservation,
    ClientsObservation,
    DatabaseObservation,
    HealthObservation,
    HealthStreak,
    InstallObservation,
    ObservationGap,
    Observations,
    ServerObservation,
    Where,
    norm_url,
    page_problems,
    printable,
)
from ..core.planning import backup_id
from . import metrics
from .credentials import license_fingerprint
from .watch import EstateWatch


@dataclass
class Streak:
    streak: HealthStreak = field(default_factory=HealthStreak)
    last: HealthObservation | None = None


@dataclass
class Estate:
    """How to reach one plan's estate: the HTTP client (with the agent token) and each database; what was
    last read of it (health streaks, portals) and the servers' long polls (`watch`)."""

    servers: ServerClient
    databases: Mapping[str, Database]
    health: dict[str, Streak] = field(default_factory=dict)
    # the license each new Management Server's replacement.license Secret holds (by new server name): sent
    # with the Deployment Agent, never shown; the core sees only its fingerprint
    licenses: Mapping[str, str] = field(default_factory=dict, repr=False)
    license_problems: Mapping[str, str] = field(default_factory=dict)  # why one could not be read (no value)
    watch: EstateWatch | None = None
    portals: dict[str, PortalStatus] = field(default_factory=dict)  # per database, as last read


def server_observation(server: Server, state: AgentState) -> ServerObservation:
    try:
        phase = ServerPhase(state.phase)
    except ValueError:
        phase = ServerPhase.STARTING
    return ServerObservation(
        name=server.name, kind=ServerKind(state.kind), version=state.version, phase=phase,
        database=state.database.name, settled=state.settled, reported_name=state.name,
        install=InstallObservation(state.install.target_version, state.install.error),
        replication_role=ReplicationRole(state.replication.role), replication_enabled=state.replication.enabled,
        caught_up=state.replication.caught_up, load_balanced=state.rotation.load_balanced,
        in_rotation=state.rotation.in_rotation, active_requests=state.rotation.active_requests,
        online=state.service.online, virtual_hosts=tuple(state.service.virtual_hosts),
        default_website=state.website.default, other_apps_in_root=tuple(state.website.other_apps_in_root),
    )


def clients_observation(info: ClientsInfo) -> ClientsObservation:
    """The estate's client configuration by URL (as the operator's spec names servers)."""
    agent = info.deployment_agent
    return ClientsObservation(
        failover=tuple(r.url for r in info.failover_servers if r.url),
        agent=agent.url if agent is not None else None,
        policy=tuple(u for u in info.policy.urls if u),
        dns={host: ref.url for host, ref in info.dns_records.items() if ref.url},
        virtual_hosts={norm_url(s.url): tuple(s.virtual_hosts) for s in info.servers.values() if s.url},
        online={norm_url(s.url): s.online for s in info.servers.values() if s.url},
        cut_off=tuple(info.cut_off),
        default_websites={host: w.default_website_url for host, w in info.websites.items() if w.default_website_url},
        website_hosts={norm_url(s.url): s.website.host for s in info.servers.values()
                       if s.url and s.website is not None and s.website.host},
        agent_license=agent.license.fingerprint if agent is not None and agent.license is not None else None,
    )


async def _clients(estate: Estate, servers: tuple[Server, ...]) -> ClientsObservation | ObservationGap:
    """Any server's agent answers for the whole estate: the first that does."""
    last = "no server to ask"
    for server in servers:
        try:
            return clients_observation(await estate.servers.clients(server.name, server.url))
        except ServerError as exc:
            last = str(exc)
    return ObservationGap(Where(), f"the estate's client configuration: {last}")


def _migration(portal: PortalStatus) -> MigrationStatus | None:
    """The portal's status, or None when it is none the guide names (unreadable: a gap, never Idle)."""
    try:
        return MigrationStatus(portal.status)
    except ValueError:
        return None


def _portal_servers(spec: UpgradePlanSpec, status: UpgradePlanStatus, name: str) -> list[Server]:
    """Whose portal to ask about database `name`, best first: the server that migrates it in this plan
    (its UpgradeSchema step), then the servers that will run the new release (strategy CleanInstall: the
    new ones), then the others. Only a server whose release is ahead of the schema lists Database Updates
    Required, so asking an old server alone would always hear "none"."""
    migrating = [s.server for s in status.steps if s.name is StepName.UPGRADE_SCHEMA and s.database == name
                 and s.server and status.current_hop in (s.hop, 0)]
    new = [r.new.name for r in spec.replacements() if r.old.database == name]
    names = [*migrating, *new, *(s.name for s in spec.servers_of(name))]
    return [spec.server(n) for n in dict.fromkeys(names)]


async def _server(estate: Estate, server: Server) -> ServerObservation | ObservationGap:
    watch = estate.watch
    state = watch.current(server.name) if watch is not None else None
    if state is None:
        try:
            state = await estate.servers.state(server.name, server.url)
        except ServerError as exc:
            return ObservationGap(Where(server=server.name), str(exc))
        if watch is not None:
            watch.remember(server.name, state)
    return server_observation(server, state)


def _portal_needed(status: UpgradePlanStatus, name: str) -> bool:
    """Whether the portal of database `name` can tell anything new: before the plan starts, while a hop
    rolls back, while the current hop's schema upgrade or verification of it is not done."""
    if not status.started or status.rolling_back:
        return True
    return any(s.name in (StepName.UPGRADE_SCHEMA, StepName.VERIFY_SCHEMA) and s.database == name
               and s.hop == status.current_hop and s.state not in DONE_STATES for s in status.steps)


async def _portal(estate: Estate, spec: UpgradePlanSpec, status: UpgradePlanStatus,
                  name: str) -> PortalStatus | ObservationGap:
    cached = estate.portals.get(name)
    if cached is not None and not _portal_needed(status, name):
        return cached
    why = []
    for server in _portal_servers(spec, status, name):
        try:
            portal = await estate.servers.portal_status(server.name, server.url)
        except (ServerError, ValidationError) as exc:
            why.append(f"{server.name}: {exc}"[:200])
            continue
        estate.portals[name] = portal
        return portal
    return ObservationGap(Where(database=name), f"no Server Configuration Portal of {name} answered"
                          f" ({'; '.join(why) or 'no server uses it'})")


async def _database(estate: Estate, spec: UpgradePlanSpec, status: UpgradePlanStatus,
                    name: str) -> DatabaseObservation | ObservationGap:
    db = estate.databases[name]
    try:
        seen, portal = await asyncio.gather(db.snapshot(_backup_ids(spec, status)),
                                            _portal(estate, spec, status, name))
    except DatabaseError as exc:
        return ObservationGap(Where(database=name), str(exc))
    version, holder = seen.schema_version, seen.lock_holder
    backups = tuple(BackupObservation(b.id, b.verified, b.taken_at, b.schema_version) for b in seen.backups)
    if version is None:
        return ObservationGap(Where(database=name), f"database {name} has no schema version (uwm_schema_info)")
    if isinstance(portal, ObservationGap):
        return portal
    migration = _migration(portal)
    if migration is None:
        return ObservationGap(Where(database=name), f"the portal of {name} shows an unknown status"
                              f" {printable(portal.status, 40)!r}")
    required = any(u.database == name for u in portal.updates_required)
    return DatabaseObservation(name=name, schema_version=version, lock_holder=holder, updates_required=required,
                               migration=migration, backups=backups,
                               migration_by=printable(portal.by, 63) if portal.by else None,
                               migration_error=printable(portal.error, 300) if portal.error else None,
                               migrations=seen.migrations)


def _backup_ids(spec: UpgradePlanSpec, status: UpgradePlanStatus) -> list[str]:
    """The ids this run's backups have (one per hop so far); none before the run started."""
    if not spec.backup.enabled or not status.plan_hash or status.started_at is None:
        return []
    return [backup_id(status.plan_hash, status.started_at, hop) for hop in range(1, max(status.current_hop, 1) + 1)]


def _pages_needed(spec: UpgradePlanSpec, status: UpgradePlanStatus) -> set[str] | None:
    """The servers whose status page the next decision reads (None: every server's, before the start)."""
    if not status.started:
        return None
    return {s.server for s in status.steps if s.name in (StepName.HEALTH_CHECK, StepName.ROLLBACK_HEALTH_CHECK)
            and s.server and s.hop == status.current_hop and s.state not in DONE_STATES}


async def _health(estate: Estate, server: Server, now: datetime, period: float,
                  agent: ServerObservation | ObservationGap | None = None,
                  needed: set[str] | None = None) -> HealthObservation | None:
    """The server's status page as the next decision needs it: read (at most once per `period`) when
    `needed` is None (before the start) or names it while its `agent` says it runs; any other server's
    page is read once while it runs (after a restart of the operator, say), then kept as last read; a
    server that does not run has none (unknown)."""
    memo = estate.health.setdefault(server.name, Streak())
    running = isinstance(agent, ServerObservation) and agent.phase is ServerPhase.RUNNING
    if needed is not None and not running:
        return None  # its page cannot confirm: not read
    if needed is not None and server.name not in needed and memo.last is not None:
        return memo.last
    if memo.last is not None and not memo.streak.due(now, period):
        return memo.last
    page = await estate.servers.status_page(server.name, server.url, server.kind.value)
    problems = page_problems(server.name, page.server, page.version, page.tests) if page.ok else []
    confirms = page.ok and not problems
    failure = None if confirms else (
        f"answered 200, but {'; '.join(problems)}" if page.ok else
        f"answered {page.http_status or 'nothing'}: {page.summary}")
    memo.streak = memo.streak.record(confirms, now, page.version, failure)
    last_failure = memo.streak.last_failure
    if not confirms:
        metrics.HEALTH_CHECK_FAILURES.labels(server.name).inc()
        detail = f"status page {failure}"
    else:
        detail = page.summary + (f"; it last failed with {last_failure}" if last_failure else "")
    memo.last = HealthObservation(confirms, memo.streak.consecutive, page.version, detail, last_failure)
    return memo.last


async def _no_clients() -> None:
    return None


async def observe(estate: Estate, spec: UpgradePlanSpec, status: UpgradePlanStatus, now: datetime,
                  competing: tuple[str, ...] = ()) -> Observations:
    servers = (*spec.servers(), *spec.replacement_servers())  # the new servers of strategy CleanInstall too
    period = float(spec.health_check.period_seconds)
    needed = _pages_needed(spec, status)

    async def server_and_page(server: Server) -> tuple[ServerObservation | ObservationGap, HealthObservation | None]:
        agent = await _server(estate, server)
        return agent, await _health(estate, server, now, period, agent, needed)

    results = await asyncio.gather(
        asyncio.gather(*(server_and_page(s) for s in servers)),
        asyncio.gather(*(_database(estate, spec, status, d.name) for d in spec.databases)),
        _clients(estate, servers) if spec.replacements() else _no_clients(),
    )
    server_pages, db_results, client_result = results
    server_results = [agent for agent, _ in server_pages]
    clients = client_result if isinstance(client_result, ClientsObservation) else None
    gaps = tuple(r for r in (*server_results, *db_results, client_result) if isinstance(r, ObservationGap))
    seen = Observations.of(
        servers=tuple(r for r in server_results if isinstance(r, ServerObservation)),
        databases=tuple(r for r in db_results if isinstance(r, DatabaseObservation)),
        health={s.name: page for s, (_, page) in zip(servers, server_pages, strict=True) if page is not None},
        gaps=gaps, competing_plans=competing, clients=clients,
    )
    return replace(seen, licenses={name: license_fingerprint(text) for name, text in estate.licenses.items()},
                   license_problems=dict(estate.license_problems))
