"""What one call of `decide()` knows, and the helpers every step shares: timeouts, failure routing, the
description of the estate that goes into every failure message.

Failure routing is in one place so that every failure, wherever found, obeys `spec.failurePolicy`
the same way: Halt stops with `Fail`; Rollback appends the hop's rollback steps (`BeginRollback`); a
failure while rolling back, or before the first hop, always halts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .actions import Action, BeginRollback, CompleteStep, Fail, Wait
from .enums import DONE_STATES, ROLLBACK_STEPS, FailurePolicy, Reason, ReplicationRole, StepName, StepState
from .models import Server, StepKey, StepStatus, UpgradePlanSpec, UpgradePlanStatus
from .observations import DatabaseObservation, Observations, ServerObservation, Where, redact
from .planning import Hop, rollback_steps


@dataclass(frozen=True)
class Limits:
    """How long a step may take, and how often to look again. Operator settings, not part of the spec:
    the spec's own `healthCheck` bounds the health checks."""

    install_seconds: float = 1800.0
    schema_seconds: float = 1800.0
    backup_seconds: float = 3600.0
    replication_seconds: float = 900.0
    step_seconds: float = 600.0
    poll_seconds: float = 5.0
    idle_seconds: float = 30.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Context:
    spec: UpgradePlanSpec
    status: UpgradePlanStatus
    seen: Observations
    now: datetime
    limits: Limits
    catalog: tuple[str, ...]
    hop: Hop

    # ------------------------------------------------------------ lookups

    def server(self, name: str) -> ServerObservation:
        return self.seen.servers[name]

    def database(self, name: str) -> DatabaseObservation:
        return self.seen.databases[name]

    @property
    def rolling_back(self) -> bool:
        return any(s.hop == self.hop.number and s.name in ROLLBACK_STEPS for s in self.status.steps)

    def section(self) -> tuple[StepStatus, ...]:
        """The steps of the current hop in the direction we are going (forward, or its rollback)."""
        back = self.rolling_back
        return tuple(s for s in self.status.steps
                     if s.hop == self.hop.number and (s.name in ROLLBACK_STEPS) == back)

    def replicating(self) -> tuple[Server, ...]:
        """Servers with a replication role, the Master first (it is switched first, both ways)."""
        found = [s for s in self.spec.servers() if s.role is not ReplicationRole.NONE]
        return tuple(sorted(found, key=lambda s: s.role is not ReplicationRole.MASTER))

    # ------------------------------------------------------------ time

    def timeout_of(self, step: StepStatus) -> float:
        match step.name:
            case StepName.INSTALL_FIRST_SERVER | StepName.INSTALL_SERVER | StepName.REINSTALL_PREVIOUS:
                return self.limits.install_seconds
            case StepName.UPGRADE_SCHEMA:
                return self.limits.schema_seconds
            case StepName.HEALTH_CHECK | StepName.ROLLBACK_HEALTH_CHECK:
                return float(self.spec.health_check.timeout_seconds)
            case StepName.BACKUP_DATABASE | StepName.RESTORE_BACKUP:
                return self.limits.backup_seconds
            case StepName.VERIFY_REPLICATION | StepName.ROLLBACK_VERIFY_REPLICATION:
                return self.limits.replication_seconds
            case _:
                return self.limits.step_seconds

    def timed_out(self, step: StepStatus) -> bool:
        return (step.state is StepState.RUNNING and step.started_at is not None
                and self.now - step.started_at > timedelta(seconds=self.timeout_of(step)))

    def overdue(self, step: StepStatus, what: str) -> Action | None:
        """A failure if `step` has run longer than its timeout, saying what it was still waiting for."""
        if not self.timed_out(step):
            return None
        return self.failure(Reason.TIMEOUT, self.where(step),
                            f"{step.key} did not finish within {self.timeout_of(step):.0f}s: {what}")

    # ------------------------------------------------------------ results

    def where(self, step: StepStatus | StepKey) -> Where:
        return Where(self.hop.number, step.name, step.server, step.database)

    def complete(self, step: StepStatus, message: str, skipped: bool = False) -> Action:
        # A step that never started and had nothing to do was skipped; one we started succeeded.
        return CompleteStep(step.key, message, skipped=skipped and step.state is StepState.PENDING)

    def wait(self, reason: Reason, message: str, *steps: StepStatus, seconds: float | None = None) -> Wait:
        return Wait(reason, self.limits.poll_seconds if seconds is None else seconds, message,
                    tuple(s.key for s in steps if s.state not in DONE_STATES))

    def failure(self, reason: Reason, where: Where, message: str) -> Action:
        text = redact(message)
        if self.rolling_back:
            return Fail(Reason.ROLLBACK_FAILED, where,
                        f"rollback of hop {self.hop.number} failed: {text}. {describe_estate(self.spec, self.seen)}")
        if self.spec.failure_policy is FailurePolicy.ROLLBACK:
            return BeginRollback(reason, where, f"{text}. {describe_estate(self.spec, self.seen)}",
                                 rollback_steps(self.spec, self.hop.number))
        return Fail(reason, where, f"{text}. {describe_estate(self.spec, self.seen)}")


def describe_estate(spec: UpgradePlanSpec, seen: Observations) -> str:
    """The estate in one line (what a human finds if the operator stops here), secret-free."""
    parts = []
    for server in spec.servers():
        obs = seen.servers.get(server.name)
        if obs is None:
            parts.append(f"{server.name} unobserved")
            continue
        bits = [obs.version, str(obs.phase)]
        if not obs.online:
            bits.append("offline")
        if server.load_balanced:
            bits.append("in rotation" if obs.in_rotation else "out of rotation")
        if server.role is not ReplicationRole.NONE:
            bits.append(f"{server.role.lower()} replication {'on' if obs.replication_enabled else 'off'}")
        parts.append(f"{server.name} {' '.join(bits)}")
    for r in spec.replacements():  # strategy CleanInstall: the new servers, and where clients point
        obs = seen.servers.get(r.new.name)
        state = f"{obs.version} {obs.phase} {'online' if obs.online else 'offline'}" if obs else "unobserved"
        parts.append(f"{r.new.name} (new, replacing {r.old.name}) {state}")
    for db in spec.databases:
        dbo = seen.databases.get(db.name)
        if dbo is None:
            parts.append(f"{db.name} unobserved")
        else:
            lock = f", locked by {dbo.lock_holder}" if dbo.lock_holder else ""
            parts.append(f"{db.name} schema {dbo.schema_version}{lock}")
    if spec.replacements() and seen.clients is not None:
        parts.append(seen.clients.describe())
    return "Estate: " + "; ".join(parts)


def hop_of(status: UpgradePlanStatus, number: int) -> Hop:
    entry = status.path[number - 1]
    return Hop(number, entry.from_version, entry.to_version)
