"""Carry out one effect that `decide()` asked for, through the adapters, and translate what goes wrong.

Each effect is a request the servers or the database accept idempotently (installing the release a
server already runs is a no-op, disabling replication twice is harmless, a backup is found by its id),
so repeating one after a crash is safe. Adapter errors become the core's `TransientError` (retry later)
or `PermanentError` (the step fails, the failure policy applies), with where it happened and no secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence

from ..adapters.database import DatabaseError
from ..adapters.servers import AgentState, ServerError
from ..core.actions import (
    AddFailoverServer,
    AddVirtualHost,
    BackupDatabase,
    BringIntoRotation,
    BringOnline,
    ClosePortal,
    DeployPolicy,
    DisableReplication,
    Effect,
    InstallServer,
    MakeDefaultWebsite,
    RedeployDeploymentAgent,
    RemoveFailoverServer,
    RestoreBackup,
    RestoreReplication,
    SwitchDnsRecord,
    TakeOffline,
    TakeOutOfRotation,
    UpgradeSchema,
)
from ..core.enums import ReplicationRole
from ..core.models import UpgradePlanSpec
from ..core.observations import BackupObservation, PermanentError, TransientError, UpgradeError, Where
from .credentials import license_fingerprint
from .observe import Estate


def _translate(exc: ServerError | DatabaseError, where: Where) -> UpgradeError:
    if isinstance(exc, ServerError):
        where = Where(where.hop, where.step, exc.server, where.database)
        if exc.transient:
            return TransientError(where, str(exc), exc.rule)
        return PermanentError(where, str(exc), exc.rule)
    where = Where(where.hop, where.step, where.server, exc.database)
    return TransientError(where, str(exc)) if exc.transient else PermanentError(where, str(exc))


async def _backup_still_verifies(estate: Estate, database: str, bid: str, where: Where) -> None:
    """The gate of a schema upgrade: the hop's backup is verified again just before (RESTORE VERIFYONLY or
    its checksum); one that is gone or no longer verifies stops the migration before it is asked for."""
    info = await estate.databases[database].verify_backup(bid)
    if info is None or not info.verified:
        state = "is missing" if info is None else "no longer verifies"
        raise PermanentError(Where(where.hop, where.step, where.server, database),
                             f"backup {bid} of {database} {state}: the schema is not upgraded without a verified"
                             " backup to restore; retry the plan to take a new one")


def _license(estate: Estate, name: str, wanted: str | None, where: Where) -> str:
    """The license text decided on (by its fingerprint); a Secret changed in between is read again first."""
    text = estate.licenses.get(name)
    if text is None or license_fingerprint(text) != wanted:
        raise TransientError(where, f"the license of {name} changed since it was decided on ({wanted}):"
                                    " deciding again with the Secret as it is now")
    return text


Answered = MutableMapping[str, list[AgentState]]


async def _each(names: Sequence[str], done: Sequence[str], call: Callable[[str], Awaitable[AgentState | None]],
                answered: Answered) -> None:
    """`call` for each of `names` but those `done`, at once; the first failure is raised once all ended."""
    results = await asyncio.gather(*(_answer(n, call(n), answered) for n in names if n not in done),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _answer(name: str, call: Awaitable[AgentState | None], answered: Answered) -> None:
    """Make the change; keep the state the agent answered with (`answers.adoptable` judges its use)."""
    state = await call
    if state is not None:
        answered.setdefault(name, []).append(state)


def precheck(estate: Estate, action: Effect) -> Awaitable[None] | None:
    """What `action` must find true before it asks anything, as a look (it asks the estate nothing; a
    verification records in the backup's own row what it found), so the loop starts it beside the status
    write that precedes the effect (`execute` awaits it before it asks): a schema upgrade's backup
    verified again. None: nothing to look at first."""
    match action:
        case UpgradeSchema(database=database, backup_id=str(bid)):
            step = action.step
            return _backup_still_verifies(estate, database, bid, Where(step.hop, step.name, step.server, step.database))
    return None


async def execute(estate: Estate, spec: UpgradePlanSpec, action: Effect,
                  answered: Answered | None = None, checked: Awaitable[None] | None = None) -> BackupObservation | None:
    """Do ``action``; return the backup for a BackupDatabase, else None. Raises UpgradeError subclasses.
    `answered` receives, by server, the states the agents answered a change with; `checked` is the
    action's `precheck`, if the caller started it already (else it is made here, first)."""
    step = action.step
    where = Where(step.hop, step.name, step.server, step.database)
    client = estate.servers
    answers: Answered = {} if answered is None else answered
    try:
        match action:
            case DisableReplication(servers=names) | RestoreReplication(servers=names):
                enabled = isinstance(action, RestoreReplication)
                masters = [n for n in names if spec.server(n).role is ReplicationRole.MASTER]
                for name in masters:  # the Master first, then its Subscribers at once
                    await _answer(name, client.set_replication(name, spec.server(name).url, enabled), answers)
                await _each(names, masters, lambda n: client.set_replication(n, spec.server(n).url, enabled),
                            answers)
            case TakeOutOfRotation(servers=names) | BringIntoRotation(servers=names):
                in_rotation = isinstance(action, BringIntoRotation)
                await _each(names, [], lambda n: client.set_rotation(n, spec.server(n).url, in_rotation), answers)
            case InstallServer(server=name, version=version):
                await _answer(name, client.install(name, spec.server(name).url, version), answers)
            case UpgradeSchema(server=name, database=database):
                gate = checked if checked is not None else precheck(estate, action)
                if gate is not None:
                    await gate
                await client.portal_update_selected(name, spec.server(name).url, [database])
            case ClosePortal(server=name):
                await client.portal_close(name, spec.server(name).url)
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
            case RedeployDeploymentAgent(agent=name, agent_url=via, url=url, license=None):
                await client.change_clients(name, via, "redeploy-deployment-agent", url=url)
            case RedeployDeploymentAgent(agent=name, agent_url=via, url=url, license=wanted):
                await client.change_clients(name, via, "redeploy-deployment-agent", url=url,
                                            license=_license(estate, name, wanted, where))
            case MakeDefaultWebsite(agent=name, agent_url=via, host=host, url=url):
                await client.change_clients(name, via, "make-default-website", host=host, url=url)
            case DeployPolicy(agent=name, agent_url=via, urls=urls):
                await client.change_clients(name, via, "deploy-policy", urls=list(urls))
            case SwitchDnsRecord(agent=name, agent_url=via, host=host, url=url):
                await client.change_clients(name, via, "switch-dns-record", host=host, url=url)
    except (ServerError, DatabaseError) as exc:
        raise _translate(exc, where) from None
    return None
