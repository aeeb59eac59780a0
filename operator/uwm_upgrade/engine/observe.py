"""Look at the estate before every decision: agent states, databases, portals, status pages, backups.

All servers and databases are observed concurrently; whatever cannot be observed becomes an
`ObservationGap` (the core then waits rather than guesses). Health confirmations are counted here, per
server, in memory (`HealthStreak`): a page is polled at most once per `healthCheck.periodSeconds`, and a
streak restarts when the page fails or shows another version. After an operator restart the count
starts again, which can only ask for more confirmations, never fewer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..adapters.database import Database, DatabaseError
from ..adapters.servers import AgentState, ClientsInfo, PortalStatus, ServerClient, ServerError
from ..core.enums import MigrationStatus, ReplicationRole, ServerKind, ServerPhase
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
)
from ..core.planning import backup_id, first_servers
from . import metrics


@dataclass
class Streak:
    streak: HealthStreak = field(default_factory=HealthStreak)
    version: str | None = None
    last: HealthObservation | None = None
    last_failure: str | None = None  # why the page last failed to confirm (kept: a flapping page's reason)


@dataclass
class Estate:
    """How to reach one plan's estate: the HTTP client (with the agent token) and each database."""

    servers: ServerClient
    databases: Mapping[str, Database]
    health: dict[str, Streak] = field(default_factory=dict)


def server_observation(server: Server, state: AgentState) -> ServerObservation:
    try:
        phase = ServerPhase(state.phase)
    except ValueError:
        phase = ServerPhase.STARTING
    return ServerObservation(
        name=server.name, kind=ServerKind(state.kind), version=state.version, phase=phase,
        database=state.database.name, settled=state.settled,
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


def _migration(portal: PortalStatus | None) -> MigrationStatus:
    if portal is None:
        return MigrationStatus.IDLE
    try:
        return MigrationStatus(portal.status)
    except ValueError:
        return MigrationStatus.IDLE


async def _server(estate: Estate, server: Server) -> ServerObservation | ObservationGap:
    try:
        state = await estate.servers.state(server.name, server.url)
    except ServerError as exc:
        return ObservationGap(Where(server=server.name), str(exc))
    return server_observation(server, state)


async def _database(estate: Estate, spec: UpgradePlanSpec, status: UpgradePlanStatus,
                    name: str) -> DatabaseObservation | ObservationGap:
    db = estate.databases[name]
    try:
        seen = await db.snapshot(_backup_ids(spec, status))
    except DatabaseError as exc:
        return ObservationGap(Where(database=name), str(exc))
    version, holder = seen.schema_version, seen.lock_holder
    backups = tuple(BackupObservation(b.id, b.verified, b.taken_at, b.schema_version) for b in seen.backups)
    if version is None:
        return ObservationGap(Where(database=name), f"database {name} has no schema version (uwm_schema_info)")
    portal, required = None, False
    candidates = [first_servers(spec).get(name)] + [s.name for s in spec.servers_of(name)]
    for server_name in dict.fromkeys(c for c in candidates if c):
        server = spec.server(server_name)
        try:
            portal = await estate.servers.portal_status(server.name, server.url)
        except ServerError:
            continue
        required = any(u.database == name for u in portal.updates_required)
        break
    return DatabaseObservation(name=name, schema_version=version, lock_holder=holder, updates_required=required,
                               migration=_migration(portal), backups=backups)


def _backup_ids(spec: UpgradePlanSpec, status: UpgradePlanStatus) -> list[str]:
    """The ids this run's backups have (one per hop so far); none before the run started."""
    if not spec.backup.enabled or not status.plan_hash or status.started_at is None:
        return []
    return [backup_id(status.plan_hash, status.started_at, hop) for hop in range(1, max(status.current_hop, 1) + 1)]


async def _health(estate: Estate, server: Server, now: datetime, period: float) -> HealthObservation:
    memo = estate.health.setdefault(server.name, Streak())
    if memo.last is not None and not memo.streak.due(now, period):
        return memo.last
    page = await estate.servers.status_page(server.name, server.url, server.kind.value)
    if page.version != memo.version:
        memo.streak, memo.last_failure = HealthStreak(0, memo.streak.last_poll), None
    memo.streak = memo.streak.record(page.ok, now)
    memo.version = page.version
    if not page.ok:
        metrics.HEALTH_CHECK_FAILURES.labels(server.name).inc()
        memo.last_failure = f"answered {page.http_status or 'nothing'}: {page.summary}"
        detail = f"status page {memo.last_failure}"
    else:
        detail = page.summary + (f"; it last failed with {memo.last_failure}" if memo.last_failure else "")
    memo.last = HealthObservation(page.ok, memo.streak.consecutive, page.version, detail)
    return memo.last


async def _no_clients() -> None:
    return None


async def observe(estate: Estate, spec: UpgradePlanSpec, status: UpgradePlanStatus, now: datetime,
                  competing: tuple[str, ...] = ()) -> Observations:
    servers = (*spec.servers(), *spec.replacement_servers())  # the new servers of strategy CleanInstall too
    period = float(spec.health_check.period_seconds)
    results = await asyncio.gather(
        asyncio.gather(*(_server(estate, s) for s in servers)),
        asyncio.gather(*(_database(estate, spec, status, d.name) for d in spec.databases)),
        asyncio.gather(*(_health(estate, s, now, period) for s in servers)),
        _clients(estate, servers) if spec.replacements() else _no_clients(),
    )
    server_results, db_results, health_results, client_result = results
    clients = client_result if isinstance(client_result, ClientsObservation) else None
    gaps = tuple(r for r in (*server_results, *db_results, client_result) if isinstance(r, ObservationGap))
    return Observations.of(
        servers=tuple(r for r in server_results if isinstance(r, ServerObservation)),
        databases=tuple(r for r in db_results if isinstance(r, DatabaseObservation)),
        health={s.name: h for s, h in zip(servers, health_results, strict=True)},
        gaps=gaps, competing_plans=competing, clients=clients,
    )
