"""The actions `decide()` can ask for: frozen dataclasses that say what they are by the class they extend.

- `Effect` changes the estate (replication, rotation, backups, installs, schema migrations, and for
  strategy CleanInstall the client configuration and servers' service, `ClientEffect`). The turn
  (`turn.py`) marks its step Running, the engine performs it through the adapters, then the outcome is
  recorded. An effect never marks its step Succeeded on its own, except a backup or a restore, whose
  result the adapter hands back: every other step succeeds only when a later observation shows it done
  (`CompleteStep`). That is what makes every step safe to resume after a crash.
- `Record` changes only the status (a plan computed, a step verified, a hop advanced, a rollback begun);
  the next turn follows at once. `Waiting` records (`Wait`, `Pause`, `AwaitApproval`, `Block`) ask for
  the next turn after `seconds`; `Final` records (`Succeed`, `Fail`, `FinishRollback`, `Idle`) end the
  plan: no turn until the resource changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime

from .enums import Reason, ReplicationState
from .models import StepKey, StepStatus
from .observations import BackupObservation, Where
from .planning import Hop


class Action:
    """What one call of `decide()` answers (never made itself: one of the classes below)."""


class Record(Action):
    """Changes only the status; the loop goes on at once."""


class Waiting(Record):
    """Nothing to do now: look again after `seconds` (or as soon as the plan's resource changes)."""

    seconds: float


class Final(Record):
    """The plan stops here (it is over, or halted): nothing happens until the resource changes."""


# ---------------------------------------------------------------- records (status only)


@dataclass(frozen=True)
class ComputePlan(Record):
    """Preflight passed: record the path, its hash and every step of the plan."""

    path: tuple[Hop, ...]
    plan_hash: str
    steps: tuple[StepStatus, ...]
    target_version: str
    current_version: str | None
    message: str


@dataclass(frozen=True)
class RecordBaseline(Record):
    """Remember replication and rotation as they were before the plan, to restore them exactly."""

    replication: tuple[tuple[str, ReplicationState], ...]
    rotation: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class AdvanceHop(Record):
    hop: int
    from_version: str
    to_version: str


@dataclass(frozen=True)
class CompleteStep(Record):
    """A step was observed done (or has nothing to do: `skipped`)."""

    step: StepKey
    message: str
    skipped: bool = False


@dataclass(frozen=True)
class RecordBackup(Record):
    """A verified backup with this hop's id exists (a crash came between taking and recording it)."""

    step: StepKey
    backup: BackupObservation


@dataclass(frozen=True)
class BeginRollback(Record):
    """The hop failed under failurePolicy Rollback: append the steps that undo it."""

    reason: Reason
    where: Where
    message: str
    steps: tuple[StepStatus, ...]


@dataclass(frozen=True)
class Wait(Waiting):
    """Nothing to do but wait `seconds`; `steps` are the steps being waited on (they count as started)."""

    reason: Reason
    seconds: float
    message: str
    steps: tuple[StepKey, ...] = ()


@dataclass(frozen=True)
class AwaitApproval(Waiting):
    """The plan is computed; it starts once the approve annotation carries `plan_hash` (`reason`: why it
    needs one, spec.approval.required or what the plan found before it started)."""

    plan_hash: str
    message: str
    seconds: float
    reason: Reason = Reason.AWAITING_APPROVAL


@dataclass(frozen=True)
class Block(Waiting):
    """Another plan holds part of this estate; start only when it is done."""

    plans: tuple[str, ...]
    message: str
    seconds: float


@dataclass(frozen=True)
class Pause(Waiting):
    """spec.paused, at a safe point: steps in flight go back to Pending, to start afresh on resume."""

    message: str
    seconds: float


@dataclass(frozen=True)
class AwaitWindow(Waiting):
    """spec.maintenanceWindow: the next hop does not start now (outside the window, or it would not fit
    in what is left of it); `next_start` is when the next window it fits in opens (None: none does)."""

    reason: Reason
    message: str
    seconds: float
    next_start: datetime | None = None


@dataclass(frozen=True)
class Fail(Final):
    """Halt: stop where we are (the estate is left as described in `message`) and say where and why.
    `cause`: what failed, when the halt's `reason` is why it was not rolled back (the failed step says it)."""

    reason: Reason
    where: Where
    message: str
    cause: Reason | None = None


@dataclass(frozen=True)
class Ending(Final):
    """The plan ends as `message` says."""

    message: str


class Succeed(Ending):
    """Every server and schema runs the target."""


class FinishRollback(Ending):
    """The hop's rollback is done: the plan is RolledBack."""


class Idle(Ending):
    """The plan is over (Succeeded, Failed, RolledBack); nothing will happen until it is recreated."""


# ---------------------------------------------------------------- effects (change the estate)


@dataclass(frozen=True)
class Effect(Action):
    """Changes the estate, for the step `step` (which is Running while it is carried out)."""

    step: StepKey


@dataclass(frozen=True)
class ServersEffect(Effect):
    """Asked of each of `servers` in turn, in this order."""

    servers: tuple[str, ...]


class DisableReplication(ServersEffect):
    """Replication off on the Master first, then on the Subscribers."""


class TakeOutOfRotation(ServersEffect):
    """Out of the load balancer's pool, before anything in it is upgraded."""


@dataclass(frozen=True)
class BackupEffect(Effect):
    database: str
    backup_id: str


class BackupDatabase(BackupEffect):
    """Take (or find, if one with this id exists) a verified backup; the adapter returns it."""


@dataclass(frozen=True)
class InstallServer(Effect):
    """Install `version` on `server` (also the rollback's reinstall of the previous release)."""

    server: str
    version: str


@dataclass(frozen=True)
class UpgradeSchema(Effect):
    """Through `server`'s Configuration Portal, UPDATE SELECTED for `database` (to `version`). Asked once
    per hop: its step records that it was requested, and it is never requested again automatically.
    `backup_id`: the hop's verified backup, checked again just before (None: spec.backup.enabled false)."""

    server: str
    database: str
    version: str
    backup_id: str | None = None


@dataclass(frozen=True)
class ClosePortal(Effect):
    """CLOSE in `server`'s Configuration Portal: the guide's step once the status says Upgrade Successful
    (never after Failed: that result stays for a human)."""

    server: str
    database: str


class RestoreBackup(BackupEffect):
    """The database as the backup `backup_id` holds it (the rollback of a hop)."""


class BringIntoRotation(ServersEffect):
    """Back into the load balancer's pool: exactly the servers that were in it before the plan."""


class RestoreReplication(ServersEffect):
    """Enable replication again on exactly the servers that had it before the plan (Master first)."""


@dataclass(frozen=True)
class ClientEffect(Effect):
    """strategy CleanInstall: a change of the estate's client configuration or of a server's service,
    asked of `agent`'s upgrade agent at `agent_url` (every agent answers for the whole estate's client
    configuration, docs/contracts.md section 2b)."""

    agent: str
    agent_url: str


@dataclass(frozen=True)
class FailoverListChange(ClientEffect):
    url: str


class AddFailoverServer(FailoverListChange):
    """The new Management Server's URL into the Failover Server List (before it comes online)."""


class RemoveFailoverServer(FailoverListChange):
    """The old Management Server's URL out of the Failover Server List (before it goes offline)."""


@dataclass(frozen=True)
class AddVirtualHost(ClientEffect):
    """The virtual host name clients use, on the new Personalization Server (before DNS points at it)."""

    host: str


class BringOnline(ClientEffect):
    """The new server starts serving clients."""


class TakeOffline(ClientEffect):
    """Decommission the old server: it stops serving clients (none points at it any more)."""


@dataclass(frozen=True)
class RedeployDeploymentAgent(ClientEffect):
    """Deploy the Deployment Agent again with the new Management Server's URL (or, cut-over DefaultWebsite,
    with the URL it holds, for the license); `license` is the fingerprint of the new license it carries,
    whose value the engine reads from the replacement's Secret (`agent` is that replacement)."""

    previous: str | None
    url: str
    license: str | None = None


@dataclass(frozen=True)
class DeployPolicy(ClientEffect):
    """Deploy an Environment Manager policy whose Personalization Server URLs are the new servers'."""

    previous: tuple[str, ...]
    urls: tuple[str, ...]


@dataclass(frozen=True)
class MakeDefaultWebsite(ClientEffect):
    """The new server's website on `host` loses its host header and becomes the host's default website, in
    place of the old server's (`previous`): clients using `http://<host>` reach the new server."""

    host: str
    previous: str | None
    url: str


@dataclass(frozen=True)
class SwitchDnsRecord(ClientEffect):
    """Point the DNS record of a virtual host name at the new Personalization Server."""

    host: str
    previous: str | None
    url: str


# ---------------------------------------------------------------- what every action implies


def steps_of(action: Action) -> tuple[StepKey, ...]:
    """The steps an action works on (they become Running when it is applied)."""
    if isinstance(action, Wait):
        return action.steps
    if isinstance(action, (Effect, CompleteStep, RecordBackup)):
        return (action.step,)
    return ()


def requeue_after(action: Action) -> float | None:
    """Seconds until the next turn; None: not until the resource changes."""
    if isinstance(action, Waiting):
        return action.seconds
    if isinstance(action, Final):
        return None
    return 0.0


_CLIENT_CHANGES: Mapping[type[ClientEffect], str] = {
    AddFailoverServer: "add {agent} ({url}) to the Failover Server List",
    RemoveFailoverServer: "remove {agent} ({url}) from the Failover Server List",
    AddVirtualHost: "add virtual host {host} to {agent}",
    BringOnline: "bring {agent} ({agent_url}) online",
    TakeOffline: "take {agent} ({agent_url}) offline",
    RedeployDeploymentAgent: "redeploy the Deployment Agent: {previous} -> {url}, license {license}",
    MakeDefaultWebsite: "make {agent} ({url}) the default website of {host} in place of {previous}",
    DeployPolicy: "deploy the Environment Manager policy: [{previous}] -> [{urls}]",
    SwitchDnsRecord: "switch DNS record {host}: {previous} -> {url}",
}


def _client_change(action: ClientEffect) -> str:
    def word(value: object) -> str:
        return ", ".join(map(str, value)) if isinstance(value, tuple) else "none" if value is None else str(value)
    return _CLIENT_CHANGES[type(action)].format(**{f.name: word(getattr(action, f.name)) for f in fields(action)})


def describe(action: Action) -> str:
    """One line for logs and events, e.g. `InstallServer ms-2 -> 2024.1 (hop 1)`."""
    name = type(action).__name__
    match action:
        case ClientEffect():
            return f"{name}: {_client_change(action)}"
        case InstallServer(step=step, server=server, version=version):
            return f"{name} {server} -> {version} (hop {step.hop}, {step.name})"
        case UpgradeSchema(step=step, server=server, database=database, version=version):
            return f"{name} {database} -> {version} via {server} (hop {step.hop})"
        case ClosePortal(step=step, server=server, database=database):
            return f"{name} {database} via {server} (hop {step.hop}): Upgrade Successful"
        case BackupEffect(step=step, database=database, backup_id=bid):
            return f"{name} {database} id {bid} (hop {step.hop})"
        case ServersEffect(step=step, servers=servers):
            return f"{name} {', '.join(servers)} (hop {step.hop})"
        case CompleteStep(step=step, message=message):
            return f"{name} {step} (hop {step.hop}): {message}"
        case Wait(reason=reason, message=message):
            return f"{name} {reason}: {message}"
        case Fail(reason=reason, where=where, message=message) | BeginRollback(
                reason=reason, where=where, message=message):
            return f"{name} {reason} at {where}: {message}"
        case AdvanceHop(hop=hop, from_version=f, to_version=t):
            return f"{name} {hop}: {f} -> {t}"
        case _:
            message = getattr(action, "message", "")
            return f"{name}: {message}" if message else name
