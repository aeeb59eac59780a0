"""Carry out one effect that `decide()` asked for, through the adapters, and translate what goes wrong.

Each effect is a request the servers or the database accept idempotently (installing the release a
server already runs is a no-op, disabling replication twice is harmless, a backup is found by its id),
so repeating one after a crash is safe. Adapter errors become the core's `TransientError` (retry later)
or `PermanentError` (the step fails, the failure policy applies), with where it happened and no secret.
"""

from __future__ import annotations

from ..adapters.database import DatabaseError
from ..adapters.servers import ServerError
from ..core.actions import (
    BackupDatabase,
    BringIntoRotation,
    DisableReplication,
    Effect,
    InstallServer,
    RestoreBackup,
    RestoreReplication,
    TakeOutOfRotation,
    UpgradeSchema,
)
from ..core.client_actions import (
    AddFailoverServer,
    AddVirtualHost,
    BringOnline,
    DeployPolicy,
    RedeployDeploymentAgent,
    RemoveFailoverServer,
    SwitchDnsRecord,
    TakeOffline,
)
from ..core.models import UpgradePlanSpec
from ..core.observations import BackupObservation, PermanentError, TransientError, UpgradeError, Where
from .observe import Estate


def _translate(exc: ServerError | DatabaseError, where: Where) -> UpgradeError:
    if isinstance(exc, ServerError):
        where = Where(where.hop, where.step, exc.server, where.database)
        if exc.transient:
            return TransientError(where, str(exc), exc.rule)
        return PermanentError(where, str(exc), exc.rule)
    where = Where(where.hop, where.step, where.server, exc.database)
    return TransientError(where, str(exc)) if exc.transient else PermanentError(where, str(exc))


async def execute(estate: Estate, spec: UpgradePlanSpec, action: Effect) -> BackupObservation | None:
    """Do ``action``; return the backup for a BackupDatabase, else None. Raises UpgradeError subclasses."""
    step = action.step
    where = Where(step.hop, step.name, step.server, step.database)
    client = estate.servers
    try:
        match action:
            case DisableReplication(servers=names) | RestoreReplication(servers=names):
                enabled = isinstance(action, RestoreReplication)
                for name in names:  # in the order given: the Master first
                    await client.set_replication(name, spec.server(name).url, enabled)
            case TakeOutOfRotation(servers=names) | BringIntoRotation(servers=names):
                in_rotation = isinstance(action, BringIntoRotation)
                for name in names:
                    await client.set_rotation(name, spec.server(name).url, in_rotation)
            case InstallServer(server=name, version=version):
                await client.install(name, spec.server(name).url, version)
            case UpgradeSchema(server=name, database=database):
                await client.portal_update_selected(name, spec.server(name).url, [database])
            case BackupDatabase(database=database, backup_id=bid):
                info = await estate.databases[database].backup(bid)
                return BackupObservation(info.id, info.verified, info.taken_at, info.schema_version)
            case RestoreBackup(database=database, backup_id=bid):
                await estate.databases[database].restore(bid)
            case BringOnline(agent=name, agent_url=url) | TakeOffline(agent=name, agent_url=url):
                await client.set_online(name, url, isinstance(action, BringOnline))
            case AddFailoverServer(agent=name, agent_url=via, url=url):
                await client.change_clients(name, via, "add-failover-server", url=url)
            case RemoveFailoverServer(agent=name, agent_url=via, url=url):
                await client.change_clients(name, via, "remove-failover-server", url=url)
            case AddVirtualHost(agent=name, agent_url=url, host=host):
                await client.change_clients(name, url, "add-virtual-host", url=url, host=host)
            case RedeployDeploymentAgent(agent=name, agent_url=via, url=url):
                await client.change_clients(name, via, "redeploy-deployment-agent", url=url)
            case DeployPolicy(agent=name, agent_url=via, urls=urls):
                await client.change_clients(name, via, "deploy-policy", urls=list(urls))
            case SwitchDnsRecord(agent=name, agent_url=via, host=host, url=url):
                await client.change_clients(name, via, "switch-dns-record", host=host, url=url)
    except (ServerError, DatabaseError) as exc:
        raise _translate(exc, where) from None
    return None
