"""An in-memory UWM estate for the core's tests, run by the simulators' own rules, in plain Python.

It refuses what the simulated agents refuse, by their own rule functions (`uwm_sim.estate`, never the
operator's `core.guide`: the referee must not share the operator's reading of the guide), takes time to
install, migrate, settle and catch up (`advance(seconds)`), locks other servers out during a migration,
keeps a journal of every operation, and plays the engine's loop (`drive`: the core's turn functions, in the
engine's order) with crashes at any of the instants a real process can die: before the status write,
after it but before the effect is sent, and after the effect but before its outcome is written. Tests
check whole upgrades, their order of events, the Events the status changes announce, and that nothing
irreversible happens twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from uwm_sim.estate import (
    RULE_BUSY,
    RULE_LOCKED,
    Catalog,
    DatabaseState,
    Phase,
    Refusal,
    ServerState,
    caught_up,
    check_install,
    check_migration,
    check_replication,
    check_rotation,
    compute_phase,
    updates_required,
)
from uwm_upgrade.core.actions import (
    Action,
    BackupDatabase,
    BringIntoRotation,
    ClosePortal,
    DisableReplication,
    InstallServer,
    RestoreBackup,
    RestoreReplication,
    TakeOutOfRotation,
    UpgradeSchema,
)
from uwm_upgrade.core.control import retry_pending
from uwm_upgrade.core.decide import Limits
from uwm_upgrade.core.enums import TERMINAL_PHASES, MigrationStatus, ReplicationRole, ServerPhase
from uwm_upgrade.core.models import UpgradePlanSpec, UpgradePlanStatus, parse_spec
from uwm_upgrade.core.observations import (
    BackupObservation,
    DatabaseObservation,
    HealthObservation,
    HealthStreak,
    InstallObservation,
    Observations,
    PermanentError,
    ServerObservation,
    TransientError,
    UpgradeError,
    Where,
)
from uwm_upgrade.core.turn import Event, Outcome, after_effect, before_effect, events_between, next_turn_in

T0 = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]


def make_spec(**overrides: Any) -> UpgradePlanSpec:
    """Two load-balanced Management servers on mgmt-db; a Master and two Subscribers on pers-db."""
    raw: dict[str, Any] = {
        "targetVersion": "2025.1",
        "releases": RELEASES,
        "databases": [
            {"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "mgmt"}},
            {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "pers"}},
        ],
        "managementServers": [
            {"name": "ms-1", "url": "http://127.0.0.1:7751", "database": "mgmt-db", "loadBalanced": True},
            {"name": "ms-2", "url": "http://127.0.0.1:7752", "database": "mgmt-db", "loadBalanced": True},
        ],
        "personalizationServers": [
            {"name": "ps-1", "url": "http://127.0.0.1:7771", "database": "pers-db", "replicationRole": "Master"},
            {"name": "ps-2", "url": "http://127.0.0.1:7772", "database": "pers-db", "replicationRole": "Subscriber"},
            {"name": "ps-3", "url": "http://127.0.0.1:7773", "database": "pers-db", "replicationRole": "Subscriber"},
        ],
        "agentSecretRef": {"name": "agent"},
    }
    raw.update(overrides)
    return parse_spec(raw)


@dataclass
class FakeServer:
    """One server as the simulators keep it (`uwm_sim.estate.ServerState`'s fields, times in seconds)."""

    name: str
    kind: str
    version: str
    database: str
    role: ReplicationRole
    load_balanced: bool
    replication_enabled: bool = False
    repl_changed_at: float = -3600.0
    in_rotation: bool = False
    active_requests: int = 0
    started_at: float = -3600.0  # the settle clock: the last start or completed install
    install_target: str | None = None
    install_started: float | None = None
    install_finished: float | None = None
    install_error: str | None = None
    install_fault: str | None = None
    estate: FakeEstate | None = field(default=None, repr=False, compare=False)

    def state(self) -> ServerState:
        return ServerState(
            name=self.name, kind=self.kind, database=self.database, version=self.version, repl_role=str(self.role),
            repl_group=GROUP if self.role is not ReplicationRole.NONE else None,
            repl_enabled=self.replication_enabled, repl_changed_at=self.repl_changed_at,
            load_balanced=self.load_balanced, in_rotation=self.in_rotation, started_at=self.started_at,
            install_target=self.install_target, install_started=self.install_started,
            install_finished=self.install_finished, install_error=self.install_error,
            install_fault=self.install_fault)

    @property
    def phase(self) -> ServerPhase:
        """The simulators' phase of this server (`uwm_sim.estate.compute_phase`), as the agent reports it."""
        assert self.estate is not None
        return self.estate.phase_of(self)

    @property
    def caught_up(self) -> bool:
        assert self.estate is not None
        return self.estate.caught_up_of(self)


@dataclass
class FakeDatabase:
    name: str
    schema: str
    data: str = "user-data-v0"
    lock_holder: str | None = None
    migration: MigrationStatus = MigrationStatus.IDLE
    migrating_to: tuple[str, ...] = ()  # the catalog steps of the migration under way
    migration_done_at: float | None = None
    backups: dict[str, tuple[str, str]] = field(default_factory=dict)

    def state(self) -> DatabaseState:
        return DatabaseState(self.name, self.schema, self.lock_holder)


@dataclass
class Faults:
    install_fail: set[str] = field(default_factory=set)     # servers whose next install fails
    migration_fail: set[str] = field(default_factory=set)   # databases whose next migration fails
    never_healthy: set[str] = field(default_factory=set)
    never_caught_up: set[str] = field(default_factory=set)  # subscribers that never catch up


GROUP = "default"  # every server with a replication role replicates in one group, as examples/fleet.yaml


class FakeEstate:
    """The estate as the simulators would run it: their phases, their catch-up, their refusals.

    Every request is judged by the simulators' own rule functions (`uwm_sim.estate`: `check_install`,
    `check_replication`, `check_rotation`, `check_migration`), never by the operator's `core.guide`, so a
    test driving `decide()` against it finds what the operator asks for that the referee refuses
    (`ops("refused")`). Like the simulators: a server whose install failed stays `Failed` (a restore of its
    database does not mend it; only a new install does); a subscriber catches up `caught_up_seconds` after
    replication is on, at its master's release, on both; a first server settles from the end of its
    install (during its schema migration); the load-balanced servers of one kind form one pool.
    """

    install_seconds = 20.0
    migration_step_seconds = 7.5
    settle_seconds = 30.0
    caught_up_seconds = 6.0

    def __init__(self, spec: UpgradePlanSpec, version: str = "2021.1", versions: dict[str, str] | None = None,
                 schemas: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.t = 0.0
        self.catalog = Catalog(tuple(spec.releases or RELEASES))
        self.journal: list[tuple[str, ...]] = []
        self.faults = Faults()
        self.streaks: dict[str, HealthStreak] = {}
        self.max_installing = 0
        self.max_down = 0  # the most servers down for the upgrade at once (installing, migrating, starting)
        self.installed_at: list[tuple[float, str]] = []  # when each accepted install was asked for
        self.servers = {
            s.name: FakeServer(s.name, s.kind, (versions or {}).get(s.name, version), s.database, s.role,
                               s.load_balanced, replication_enabled=s.role is not ReplicationRole.NONE,
                               in_rotation=s.load_balanced)
            for s in spec.servers()}
        for server in self.servers.values():
            server.estate = self
        self.databases = {d.name: FakeDatabase(d.name, (schemas or {}).get(d.name, version)) for d in spec.databases}

    @property
    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    # ------------------------------------------------------------ the simulators' view

    def phase_of(self, s: FakeServer) -> ServerPhase:
        db = self.databases[s.database].state()
        return ServerPhase(compute_phase(s.state(), db, self.catalog, self.t, self.settle_seconds).value)

    def _group(self) -> list[ServerState]:
        return [s.state() for s in self.servers.values() if s.role is not ReplicationRole.NONE]

    def caught_up_of(self, s: FakeServer) -> bool:
        if s.name in self.faults.never_caught_up:
            return False
        return caught_up(s.state(), self._group(), self.t, self.caught_up_seconds)

    def _pool(self, s: FakeServer) -> list[ServerState]:
        return [o.state() for o in self.servers.values() if o.load_balanced and o.kind == s.kind]

    def _same_db(self, s: FakeServer) -> list[ServerState]:
        return [o.state() for o in self.servers.values() if o.database == s.database]

    def _replicated(self, s: FakeServer) -> list[ServerState]:
        """Every member of a replication group that has a server on `s`'s database."""
        touches = any(o.role is not ReplicationRole.NONE for o in self.servers.values() if o.database == s.database)
        return self._group() if touches else []

    # ------------------------------------------------------------ time

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for s in self.servers.values():
            s.active_requests = 0 if not s.in_rotation else s.active_requests
            if s.install_target and s.install_finished is None and s.install_fault != "hang" \
                    and self.t >= (s.install_started or 0.0) + self.install_seconds:
                self._finish_install(s)
        for db in self.databases.values():
            if db.lock_holder and db.migration_done_at is not None and self.t >= db.migration_done_at:
                self._finish_migration(db)

    def _finish_install(self, s: FakeServer) -> None:
        s.install_finished = self.t
        if s.install_fault == "fail":
            s.install_error, s.install_fault = "msiexec returned 1603", None
            self.journal.append(("install-failed", s.name, s.install_target or ""))
            return
        s.version, s.started_at, s.install_fault = s.install_target or s.version, self.t, None
        self.journal.append(("installed", s.name, s.version))

    def _finish_migration(self, db: FakeDatabase) -> None:
        steps = db.migrating_to
        if db.name in self.faults.migration_fail:  # as the simulator: half the steps, damaged rows, Failed
            self.faults.migration_fail.discard(db.name)
            half = steps[: len(steps) // 2]
            db.schema = half[-1] if half else db.schema
            db.data, db.migration = "user-data-damaged", MigrationStatus.FAILED
            self.journal.append(("migration-failed", db.name, steps[-1] if steps else ""))
        else:
            db.schema, db.migration = steps[-1] if steps else db.schema, MigrationStatus.UPGRADE_SUCCESSFUL
            self.journal.append(("migrated", db.name, db.schema))
        db.lock_holder, db.migrating_to, db.migration_done_at = None, (), None

    # ------------------------------------------------------------ observing

    def _count_down(self) -> None:
        """Servers down for the upgrade: installing, waiting for or running their schema migration, starting.
        After a rollback's restore every server already upgraded waits for its reinstall (ahead of its
        schema): that is the restore's, not concurrency."""
        down = {ServerPhase.INSTALLING, ServerPhase.MIGRATING_SCHEMA, ServerPhase.STARTING}
        if not self.ops("restore"):
            down.add(ServerPhase.DATABASE_UPDATES_REQUIRED)
        self.max_down = max(self.max_down, sum(s.phase in down for s in self.servers.values()))

    def observe(self, period: float = 2.0) -> Observations:
        self._count_down()
        servers = tuple(ServerObservation(
            name=s.name, kind=self.spec.server(s.name).kind, version=s.version, phase=s.phase, database=s.database,
            reported_name=s.name,
            install=InstallObservation(s.install_target, s.install_error), replication_role=s.role,
            replication_enabled=s.replication_enabled, caught_up=s.caught_up, load_balanced=s.load_balanced,
            in_rotation=s.in_rotation, active_requests=s.active_requests) for s in self.servers.values())
        databases = tuple(DatabaseObservation(
            name=d.name, schema_version=d.schema, lock_holder=d.lock_holder,
            updates_required=any(updates_required(s.state(), d.state(), self.catalog)
                                 for s in self.servers.values() if s.database == d.name),
            migration=d.migration,
            backups=tuple(BackupObservation(i, True, self.now, b[0]) for i, b in d.backups.items()))
            for d in self.databases.values())
        health = {}
        for s in self.servers.values():
            ok = s.phase is ServerPhase.RUNNING and s.name not in self.faults.never_healthy
            streak = self.streaks.get(s.name, HealthStreak())
            if streak.due(self.now, period):
                streak = streak.record(ok, self.now, s.version)
                self.streaks[s.name] = streak
            health[s.name] = HealthObservation(ok, streak.consecutive, s.version, "ok" if ok else "503")
        return Observations.of(servers, databases, health)

    # ------------------------------------------------------------ acting: the simulators' rules

    def _refused(self, action: Action, refusal: Refusal) -> UpgradeError:
        """The agent's 409: `busy` and `schema-locked` are worth retrying (adapters/servers.py); every
        refusal is journalled, `busy` apart (asking again after a crash is how an install in flight is found)."""
        if refusal.rule != RULE_BUSY:
            self.journal.append(("refused", type(action).__name__, refusal.rule))
        if refusal.rule in (RULE_BUSY, RULE_LOCKED):
            return TransientError(Where(), refusal.reason, rule=refusal.rule)
        return PermanentError(Where(), refusal.reason, rule=refusal.rule)

    def execute(self, action: Action) -> BackupObservation | None:
        try:
            return self._execute(action)
        except Refusal as refusal:
            raise self._refused(action, refusal) from None

    def _execute(self, action: Action) -> BackupObservation | None:
        match action:
            case DisableReplication(servers=names) | RestoreReplication(servers=names):
                on = isinstance(action, RestoreReplication)
                for n in names:  # in the order given, as the engine calls them
                    s = self.servers[n]
                    check_replication(s.state(), on, self._group(),
                                      [self.databases[o.database].state() for o in self.servers.values()
                                       if o.role is not ReplicationRole.NONE])
                    if s.replication_enabled != on:
                        s.replication_enabled, s.repl_changed_at = on, self.t
                    self.journal.append(("replication", n, "on" if on else "off"))
            case TakeOutOfRotation(servers=names) | BringIntoRotation(servers=names):
                on = isinstance(action, BringIntoRotation)
                for n in names:
                    s = self.servers[n]
                    check_rotation(s.state(), on, Phase(s.phase.value), self.databases[s.database].state())
                    if not on:
                        s.active_requests = 1
                    s.in_rotation = on
                    self.journal.append(("rotation", n, "in" if on else "out"))
            case InstallServer(server=name, version=version):
                self._install(self.servers[name], version)
            case UpgradeSchema(server=name, database=db_name):
                self._migrate(action, self.servers[name], self.databases[db_name])
            case ClosePortal(database=db_name):  # CLOSE: back to Idle (never while upgrading)
                db = self.databases[db_name]
                if db.migration is not MigrationStatus.UPGRADING:
                    db.migration = MigrationStatus.IDLE
                    self.journal.append(("close", db_name, ""))
            case BackupDatabase(database=db_name, backup_id=bid):
                db = self.databases[db_name]
                if bid not in db.backups:
                    db.backups[bid] = (db.schema, db.data)
                    self.journal.append(("backup", db_name, bid))
                return BackupObservation(bid, True, self.now, db.backups[bid][0])
            case RestoreBackup(database=db_name, backup_id=bid):
                db = self.databases[db_name]
                if db.lock_holder is not None:
                    raise Refusal(RULE_LOCKED, f"{db.lock_holder} holds the schema lock of {db_name}")
                db.schema, db.data = db.backups[bid]
                self.journal.append(("restore", db_name, bid))
            case _:
                raise AssertionError(f"not an effect: {action}")
        return None

    def _install(self, s: FakeServer, version: str) -> None:
        db = self.databases[s.database].state()
        group = self._group() if s.role is not ReplicationRole.NONE else []
        if not check_install(s.state(), version, self.catalog, group, db, pool=self._pool(s),
                             same_db=self._same_db(s), replicated=self._replicated(s)):
            return  # already there: a no-op
        fault = "fail" if s.name in self.faults.install_fail else None
        self.faults.install_fail.discard(s.name)
        s.install_target, s.install_started, s.install_finished = version, self.t, None
        s.install_error, s.install_fault = None, fault
        self.journal.append(("install", s.name, version))
        self.installed_at.append((self.t, s.name))
        installing = sum(o.install_target is not None and o.install_finished is None for o in self.servers.values())
        self.max_installing = max(self.max_installing, installing)
        self._count_down()

    def _migrate(self, action: Action, s: FakeServer, db: FakeDatabase) -> None:
        if db.migration is MigrationStatus.FAILED:  # as the operator's adapter: never over a failed one
            raise Refusal("migration-failed", f"the portal reports a failed migration of {db.name}")
        steps = check_migration(s.state(), db.state(), self.catalog, self._same_db(s), self._replicated(s))
        db.lock_holder, db.migrating_to, db.migration = s.name, steps, MigrationStatus.UPGRADING
        db.migration_done_at = self.t + self.migration_step_seconds * len(steps)
        self.journal.append(("migrate", db.name, steps[-1]))

    def ops(self, kind: str) -> list[tuple[str, ...]]:
        return [e for e in self.journal if e[0] == kind]


@dataclass
class Run:
    status: UpgradePlanStatus
    actions: list[Action]
    cycles: int
    events: list[Event] = field(default_factory=list)


def drive(spec: UpgradePlanSpec, estate: FakeEstate, *, status: UpgradePlanStatus | None = None,
          crash_at: Iterable[tuple[int, str]] = (), approval: str | None = None, max_cycles: int = 3000,
          limits: Limits | None = None, on_cycle: Callable[[int, UpgradePlanStatus], UpgradePlanSpec] | None = None,
          order: Random | None = None, on_write: Callable[[UpgradePlanStatus], None] | None = None) -> Run:
    """The engine's loop (core/turn.py, in the engine's order) against `estate`. `crash_at` =
    {(cycle, instant)}: the process dies at that instant of that turn, losing the status not yet written
    and the in-memory health streaks. The instants: "before-effect" (decided, nothing written),
    "before-send" (the status that marks the steps Running is written, no request is sent),
    "mid-effects" (the turn's effects run at once: some of them landed, the others were never sent, no
    outcome is written), "after-effect" (the estate did them all, their outcomes are not written). The
    engine carries a turn's effects out concurrently: `order` shuffles them (in any order they may land).
    `Run.events` are the Events each write announced; `on_write` sees every status a write went through
    (a turn's rounds, `Turn.passed`, then what it wrote)."""
    crashes = set(crash_at)
    stored = status or UpgradePlanStatus()
    actions: list[Action] = []
    events: list[Event] = []
    kwargs = {"limits": limits} if limits else {}

    def write(new: UpgradePlanStatus, passed: tuple[UpgradePlanStatus, ...] = ()) -> UpgradePlanStatus:
        events.extend(events_between(stored, new, passed))
        if on_write is not None:
            for written in (*passed, new):
                on_write(written)
        return new

    def crash() -> None:
        estate.streaks.clear()
        estate.advance(1.0)

    for cycle in range(max_cycles):
        if on_cycle is not None:
            spec = on_cycle(cycle, stored)
        if stored.phase in TERMINAL_PHASES and not retry_pending(spec, stored):  # over, as the engine's loop
            return Run(stored, actions, cycle, events)
        seen = estate.observe(float(spec.health_check.period_seconds))
        turn = before_effect(spec, stored, seen, estate.now, approval=approval, **kwargs)
        actions.extend(turn.actions)
        if (cycle, "before-effect") in crashes:
            crash()
            continue
        stored = write(turn.status, turn.passed)
        effects = list(turn.effects)
        if effects and (cycle, "before-send") in crashes:
            crash()
            continue
        if order is not None:
            order.shuffle(effects)
        if len(effects) > 1 and (cycle, "mid-effects") in crashes:
            for effect in effects[: len(effects) // 2]:
                with suppress(UpgradeError):
                    estate.execute(effect)
            crash()
            continue
        outcomes = []
        for effect in effects:
            try:
                outcomes.append(Outcome(effect, estate.execute(effect)))
            except UpgradeError as exc:
                outcomes.append(Outcome(effect, error=exc))
        if outcomes and (cycle, "after-effect") in crashes and not any(o.error for o in outcomes):
            crash()
            continue
        if outcomes:
            stored = write(after_effect(stored, outcomes, estate.now))
        wait = next_turn_in(turn, outcomes)
        estate.advance(max(1.0, min(wait if wait is not None else 30.0, 10.0)))
    return Run(stored, actions, max_cycles, events)


def spec_with(spec: UpgradePlanSpec, **changes: Any) -> UpgradePlanSpec:
    return spec.model_copy(update=changes)


__all__ = ["RELEASES", "T0", "FakeEstate", "Run", "drive", "make_spec", "replace", "spec_with"]
