"""What one call of `decide()` knows, and the helpers every step shares: the strategy and its step
table, timeouts, failure routing, the description of the estate that goes into every failure message.

A strategy (`UpgradeStrategy`, the two of them in `strategies.py`) is its extra preflight, the steps of
its hops and its table `StepName -> StepKind(handler, timeout)`: the one place that says which steps it
can run, how, and for how long.

Failure routing is in one place so that every failure, wherever found, obeys `spec.failurePolicy`
the same way: Halt stops with `Fail`; Rollback appends the hop's rollback steps (`BeginRollback`); a
failure while rolling back, or before the first hop, or under a strategy that cannot roll back, halts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from .actions import Action, BeginRollback, CompleteStep, Fail, Wait
from .enums import DONE_STATES, FailurePolicy, Reason, ReplicationRole, ReplicationState, StepName, StepState, Strategy
from .models import Server, StepKey, StepStatus, UpgradePlanSpec, UpgradePlanStatus
from .observations import DatabaseObservation, Observations, ServerObservation, Where, redact
from .planning import Hop, HopSteps, plan_steps
from .safety import changed_databases, loss_window, served


class Timeout(StrEnum):
    """How long a kind of step may run: which of the `Limits` (or the spec's healthCheck) bounds it."""

    INSTALL = "install"
    SCHEMA = "schema"
    BACKUP = "backup"
    REPLICATION = "replication"
    HEALTH_CHECK = "healthCheck"
    STEP = "step"


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
    # A wait that a change of what is observed ends (an install completing, a lock released, a server
    # settling, a subscriber catching up): the engine looks again as soon as anything it watches changes,
    # and at the latest after this long.
    watch_seconds: float = 30.0

    def seconds(self, timeout: Timeout, spec: UpgradePlanSpec) -> float:
        """How long a step of this kind may run."""
        match timeout:
            case Timeout.INSTALL:
                return self.install_seconds
            case Timeout.SCHEMA:
                return self.schema_seconds
            case Timeout.BACKUP:
                return self.backup_seconds
            case Timeout.REPLICATION:
                return self.replication_seconds
            case Timeout.HEALTH_CHECK:
                return float(spec.health_check.timeout_seconds)
            case _:
                return self.step_seconds


DEFAULT_LIMITS = Limits()

# The installs that take a serving server down, and the checks that end it (`Context.in_flight`); the
# installs of the servers run as a group (`Context.grouped`).
BOUNDED_INSTALLS = frozenset({StepName.INSTALL_FIRST_SERVER, StepName.INSTALL_SERVER, StepName.REINSTALL_PREVIOUS})
HEALTH_STEPS = frozenset({StepName.HEALTH_CHECK, StepName.ROLLBACK_HEALTH_CHECK})
GROUP_INSTALLS = frozenset({StepName.INSTALL_SERVER, StepName.REINSTALL_PREVIOUS})


Actions = tuple[Action, ...]
StepHandler = Callable[["Context", StepStatus], "Action | Actions"]
# The steps of one hop (or of its rollback) each step waits for: it may run once they are done.
Lanes = Callable[[UpgradePlanSpec, Sequence[StepStatus]], Mapping[StepKey, tuple[StepKey, ...]]]


@dataclass(frozen=True)
class StepKind:
    """How a step is run (`handler`: what to do next for it, judged from the estate; it may answer several
    actions) and how long it may run before it fails."""

    handler: StepHandler
    timeout: Timeout = Timeout.STEP


@dataclass(frozen=True)
class UpgradeStrategy:
    """One strategy of the guide: what it checks before planning (beyond the checks common to all), the
    steps of its hops, the steps that roll a hop back (None: it never rolls back, it halts) and how each
    step it can plan is run."""

    name: Strategy
    preflight: Callable[[UpgradePlanSpec, Observations, Sequence[Hop], Sequence[str], Limits], Action | None]
    hop_steps: HopSteps
    rollback_steps: Callable[[UpgradePlanSpec, int], tuple[StepStatus, ...]] | None
    table: Mapping[StepName, StepKind]
    # Which steps of a hop wait for which (None: each waits for the one before it, in plan order). A
    # rollback's steps always run in order.
    lanes: Lanes | None = None

    def plan_steps(self, spec: UpgradePlanSpec, path: Sequence[Hop],
                   leaders: Mapping[str, str] | None = None) -> tuple[StepStatus, ...]:
        return plan_steps(spec, path, self.hop_steps, leaders)


@dataclass(frozen=True)
class Context:
    spec: UpgradePlanSpec
    status: UpgradePlanStatus
    seen: Observations
    now: datetime
    limits: Limits
    catalog: tuple[str, ...]
    hop: Hop
    strategy: UpgradeStrategy
    # The steps that may run now (their lanes' earlier steps are done); None: every step of the section
    # (a section run in order hands its first unfinished step, or its whole group, to the handler).
    ready: frozenset[StepKey] | None = None

    # ------------------------------------------------------------ lookups

    def server(self, name: str) -> ServerObservation:
        return self.seen.servers[name]

    def database(self, name: str) -> DatabaseObservation:
        return self.seen.databases[name]

    @cached_property
    def _section(self) -> tuple[StepStatus, ...]:
        back = self.status.rolling_back
        return tuple(s for s in self.status.steps if s.hop == self.hop.number and s.name.undoes == back)

    def section(self) -> tuple[StepStatus, ...]:
        """The steps of the current hop in the direction we are going (forward, or its rollback)."""
        return self._section

    @cached_property
    def grouped(self) -> frozenset[str]:
        """The servers run as a group (`server_group`): those with an InstallServer or ReinstallPrevious step."""
        return frozenset(s.server for s in self._section if s.name in GROUP_INSTALLS and s.server)

    def is_ready(self, step: StepStatus) -> bool:
        return self.ready is None or step.key in self.ready

    def group_install(self, step: StepStatus) -> StepName | None:
        """The install step of the group `step` is run with (`server_group`: its install and its health
        check, one call for the whole group), or None when it runs on its own."""
        if step.server not in self.grouped or step.name not in GROUP_INSTALLS | HEALTH_STEPS:
            return None
        return StepName.REINSTALL_PREVIOUS if step.name.undoes else StepName.INSTALL_SERVER

    # ------------------------------------------------------------ time

    def timeout_of(self, step: StepStatus) -> float:
        kind = self.strategy.table.get(step.name)
        return self.limits.seconds(kind.timeout if kind else Timeout.STEP, self.spec)

    def running_for(self, step: StepStatus) -> float | None:
        """Seconds `step` has been running: the engine's own timer when it gives one (`Observations.
        running_for`; a step it has not timed yet has just started), else since `startedAt`."""
        if step.state is not StepState.RUNNING:
            return None
        if self.seen.running_for is not None:
            return self.seen.running_for.get(step.key, 0.0)
        return None if step.started_at is None else (self.now - step.started_at).total_seconds()

    def timed_out(self, step: StepStatus) -> bool:
        elapsed = self.running_for(step)
        return elapsed is not None and elapsed > self.timeout_of(step)

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
        """Wait `seconds`; by default, for something unobserved, `poll_seconds` (look again soon), else for
        what the estate will show (`watch_seconds` at most: a change of what is watched ends it sooner). The
        steps waited on count as started."""
        if seconds is None:
            unobserved = reason is Reason.OBSERVATION_UNAVAILABLE
            seconds = self.limits.poll_seconds if unobserved else self.limits.watch_seconds
        return Wait(reason, seconds, message, tuple(s.key for s in steps if s.state not in DONE_STATES))

    # ------------------------------------------------------------ servers in flight

    @cached_property
    def in_flight(self) -> frozenset[str]:
        """The servers down for this hop: from the moment their install is asked for (its step Running)
        until their status page confirmed (their health step done); a database's first server all through
        its schema upgrade. `maxConcurrentServers` bounds them. While a hop rolls back, a server the hop
        left in flight counts until its reinstall takes it over."""
        steps = [s for s in self.status.steps if s.hop == self.hop.number]
        taken_over = {s.server for s in steps
                      if s.name is StepName.REINSTALL_PREVIOUS and s.state is not StepState.PENDING}
        found = set()
        for back in (False, True):
            mine = [s for s in steps if s.name.undoes == back]
            checks = {s.server: s for s in mine if s.name in HEALTH_STEPS}
            for step in mine:
                if step.name not in BOUNDED_INSTALLS or step.server is None or (not back and step.server in taken_over):
                    continue
                check = checks.get(step.server)
                waiting = step.state is StepState.SUCCEEDED and check is not None and check.state not in DONE_STATES
                if step.state is StepState.RUNNING or waiting:
                    found.add(step.server)
        return frozenset(found)

    def failure(self, reason: Reason, where: Where, message: str) -> Action:
        text = redact(message)
        estate = describe_estate(self.spec, self.seen, self.status)
        if self.status.rolling_back:
            return Fail(Reason.ROLLBACK_FAILED, where, f"rollback of hop {self.hop.number} failed: {text}. {estate}")
        undo = self.strategy.rollback_steps
        if self.spec.failure_policy is FailurePolicy.ROLLBACK and undo is not None:
            changed = changed_databases(self.status, self.hop.number)
            unsafe = served(self.status, self.hop.number, changed)
            if unsafe:  # a restore would lose what clients wrote on the new release: halt instead
                return Fail(Reason.ROLLBACK_UNSAFE, where, (
                    f"{text}. Not rolled back: {'; '.join(unsafe)}, so restoring its backup would lose the user"
                    " data written since. The estate is left as it is, to be finished forward: fix the cause,"
                    " then delete this plan and create it again (it plans from the estate as it is); or restore"
                    f" by hand, accepting that loss. {estate}"), cause=reason)
            window = loss_window(self.status, self.hop.number, changed)
            return BeginRollback(reason, where, f"{text}. {window + '. ' if window else ''}{estate}",
                                 undo(self.spec, self.hop.number))
        return Fail(reason, where, f"{text}. {estate}")


def describe_estate(spec: UpgradePlanSpec, seen: Observations, status: UpgradePlanStatus | None = None) -> str:
    """The estate in one line (what a human finds if the operator stops here), secret-free. A server this
    pass could not observe is described as `status` last recorded it, saying so: a plan that stops while
    its servers do not answer still tells which it left out of rotation, unreplicated or half upgraded."""
    parts = []
    for server in spec.servers():
        obs = seen.servers.get(server.name)
        if obs is None:
            parts.append(f"{server.name} unobserved{_last_seen(server, status)}")
            continue
        bits = [obs.version, str(obs.phase), *(() if obs.online else ("offline",))]
        bits += _pool_and_replication(server, obs.in_rotation, obs.replication_enabled)
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


def _pool_and_replication(server: Server, in_rotation: bool | None, replicating: bool | None) -> list[str]:
    """A server's pool membership and replication, in the words of the estate line (None: not known)."""
    bits = []
    if server.load_balanced and in_rotation is not None:
        bits.append("in rotation" if in_rotation else "out of rotation")
    if server.role is not ReplicationRole.NONE and replicating is not None:
        bits.append(f"{server.role.lower()} replication {'on' if replicating else 'off'}")
    return bits


def _last_seen(server: Server, status: UpgradePlanStatus | None) -> str:
    known = status.server(server.name) if status is not None else None
    if known is None or known.version is None:
        return ""
    replicating = None if known.replication is None else known.replication is ReplicationState.ENABLED
    return ", last seen " + " ".join([known.version, *_pool_and_replication(server, known.online, replicating)])


def hop_of(status: UpgradePlanStatus, number: int) -> Hop:
    entry = status.path[number - 1]
    return Hop(number, entry.from_version, entry.to_version)
