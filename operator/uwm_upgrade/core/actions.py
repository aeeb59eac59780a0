"""The actions `decide()` can ask for: a small tagged union of frozen dataclasses.

Two families. *Records* change only the status (a plan computed, a step verified, a hop advanced, a
failure declared); the handler applies them with `transitions.apply_decision` and does no I/O. *Effects*
change the estate (replication, rotation, backups, installs, schema migrations); the handler marks their
step Running (`apply_decision`), performs them through the adapters, then records the outcome
(`apply_result` or `apply_error`). An effect never marks its step Succeeded on its own, except a backup or
a restore, whose result the adapter hands back: every other step succeeds only when a later observation
shows it done (`CompleteStep`). That is what makes every step safe to resume after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .client_actions import CLIENT_EFFECT_TYPES, ClientEffect
from .enums import Reason, ReplicationState
from .models import StepKey, StepStatus
from .observations import BackupObservation, Where
from .planning import Hop

# ---------------------------------------------------------------- records (status only)


@dataclass(frozen=True)
class ComputePlan:
    """Preflight passed: record the path, its hash and every step of the plan."""

    path: tuple[Hop, ...]
    plan_hash: str
    steps: tuple[StepStatus, ...]
    target_version: str
    current_version: str | None
    message: str
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class AwaitApproval:
    plan_hash: str
    message: str
    seconds: float
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class Block:
    """Another plan holds part of this estate; start only when it is done."""

    plans: tuple[str, ...]
    message: str
    seconds: float
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class Pause:
    message: str
    seconds: float
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class RecordBaseline:
    """Remember replication and rotation as they were before the plan, to restore them exactly."""

    replication: tuple[tuple[str, ReplicationState], ...]
    rotation: tuple[tuple[str, bool], ...]
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class AdvanceHop:
    hop: int
    from_version: str
    to_version: str
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class CompleteStep:
    """A step was observed done (or has nothing to do: `skipped`)."""

    step: StepKey
    message: str
    skipped: bool = False
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class RecordBackup:
    """A verified backup with this hop's id exists (a crash came between taking and recording it)."""

    step: StepKey
    backup: BackupObservation
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class Wait:
    """Nothing to do but wait `seconds`; `steps` are the steps being waited on (they count as started)."""

    reason: Reason
    seconds: float
    message: str
    steps: tuple[StepKey, ...] = ()
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class Succeed:
    message: str
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class Fail:
    """Halt: stop where we are (the estate is left as described in `message`) and say where and why."""

    reason: Reason
    where: Where
    message: str
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class BeginRollback:
    """The hop failed under failurePolicy Rollback: append the steps that undo it."""

    reason: Reason
    where: Where
    message: str
    steps: tuple[StepStatus, ...]
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class FinishRollback:
    message: str
    effect: ClassVar[bool] = False


@dataclass(frozen=True)
class Idle:
    """The plan is over (Succeeded, Failed, RolledBack); nothing will happen until it is recreated."""

    message: str
    effect: ClassVar[bool] = False


# ---------------------------------------------------------------- effects (change the estate)


@dataclass(frozen=True)
class DisableReplication:
    step: StepKey
    servers: tuple[str, ...]  # the Master first, then the Subscribers
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class TakeOutOfRotation:
    step: StepKey
    servers: tuple[str, ...]
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class BackupDatabase:
    """Take (or find, if one with this id exists) a verified backup; the adapter returns it."""

    step: StepKey
    database: str
    backup_id: str
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class InstallServer:
    """Install `version` on `server` (also the rollback's reinstall of the previous release)."""

    step: StepKey
    server: str
    version: str
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class UpgradeSchema:
    """Through `server`'s Configuration Portal, UPDATE SELECTED for `database` (to `version`)."""

    step: StepKey
    server: str
    database: str
    version: str
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class RestoreBackup:
    step: StepKey
    database: str
    backup_id: str
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class BringIntoRotation:
    step: StepKey
    servers: tuple[str, ...]
    effect: ClassVar[bool] = True


@dataclass(frozen=True)
class RestoreReplication:
    """Enable replication again on exactly the servers that had it before the plan (Master first)."""

    step: StepKey
    servers: tuple[str, ...]
    effect: ClassVar[bool] = True


Effect = (DisableReplication | TakeOutOfRotation | BackupDatabase | InstallServer | UpgradeSchema | RestoreBackup
          | BringIntoRotation | RestoreReplication | ClientEffect)
Record = (ComputePlan | AwaitApproval | Block | Pause | RecordBaseline | AdvanceHop | CompleteStep | RecordBackup
          | Wait | Succeed | Fail | BeginRollback | FinishRollback | Idle)
Action = Effect | Record

EFFECT_TYPES = (DisableReplication, TakeOutOfRotation, BackupDatabase, InstallServer, UpgradeSchema,
                RestoreBackup, BringIntoRotation, RestoreReplication, *CLIENT_EFFECT_TYPES)


def steps_of(action: Action) -> tuple[StepKey, ...]:
    """The steps an action works on (they become Running when it is applied)."""
    if isinstance(action, Wait):
        return action.steps
    if isinstance(action, (CompleteStep, RecordBackup, *EFFECT_TYPES)):
        return (action.step,)
    return ()


def requeue_after(action: Action) -> float | None:
    """Seconds until the handler should call `decide()` again; None: not until the resource changes."""
    if isinstance(action, (Wait, Pause, AwaitApproval, Block)):
        return action.seconds
    if isinstance(action, (Idle, Succeed, Fail, FinishRollback)):
        return None
    return 0.0


def describe(action: Action) -> str:
    """One line for logs and events, e.g. `InstallServer ms-2 -> 2024.1 (hop 1)`."""
    name = type(action).__name__
    match action:
        case InstallServer(step=step, server=server, version=version):
            return f"{name} {server} -> {version} (hop {step.hop}, {step.name})"
        case UpgradeSchema(step=step, server=server, database=database, version=version):
            return f"{name} {database} -> {version} via {server} (hop {step.hop})"
        case BackupDatabase(step=step, database=database, backup_id=bid) | RestoreBackup(
                step=step, database=database, backup_id=bid):
            return f"{name} {database} id {bid} (hop {step.hop})"
        case DisableReplication(step=step, servers=servers) | TakeOutOfRotation(step=step, servers=servers) | \
                BringIntoRotation(step=step, servers=servers) | RestoreReplication(step=step, servers=servers):
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
