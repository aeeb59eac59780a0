"""An in-memory UWM estate for the core's tests: obeys the guide like the simulators, in plain Python.

It refuses what the agents refuse (rule ids of docs/contracts.md), takes time to install and migrate
(`advance(seconds)`), locks other servers out during a migration, keeps a journal of every operation,
and plays the handler's loop (`drive`) with optional crashes between the status writes, so tests can
check whole upgrades, their order of events, and that nothing irreversible happens twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from uwm_upgrade.core.actions import (
    Action,
    BackupDatabase,
    BringIntoRotation,
    DisableReplication,
    Idle,
    InstallServer,
    RestoreBackup,
    RestoreReplication,
    TakeOutOfRotation,
    UpgradeSchema,
    requeue_after,
)
from uwm_upgrade.core.decide import Limits, decide
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
from uwm_upgrade.core.status import record_observations
from uwm_upgrade.core.transitions import apply_decision, apply_error, apply_result

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
    name: str
    kind: str
    version: str
    database: str
    role: ReplicationRole
    load_balanced: bool
    replication_enabled: bool = False
    in_rotation: bool = False
    active_requests: int = 0
    caught_up: bool = True
    phase: ServerPhase = ServerPhase.RUNNING
    install_target: str | None = None
    install_error: str | None = None
    busy_until: datetime | None = None
    settled_at: datetime = T0 - timedelta(hours=1)


@dataclass
class FakeDatabase:
    name: str
    schema: str
    data: str = "user-data-v0"
    lock_holder: str | None = None
    migration: MigrationStatus = MigrationStatus.IDLE
    migrating_to: str | None = None
    migration_done_at: datetime | None = None
    backups: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Faults:
    install_fail: set[str] = field(default_factory=set)     # servers whose next install fails
    migration_fail: set[str] = field(default_factory=set)   # databases whose next migration fails
    never_healthy: set[str] = field(default_factory=set)


class FakeEstate:
    install_seconds = 20.0
    migration_seconds = 15.0
    settle_seconds = 30.0

    def __init__(self, spec: UpgradePlanSpec, version: str = "2021.1", versions: dict[str, str] | None = None,
                 schemas: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.now = T0
        self.journal: list[tuple[str, ...]] = []
        self.faults = Faults()
        self.streaks: dict[str, HealthStreak] = {}
        self.max_installing = 0
        self.servers = {
            s.name: FakeServer(s.name, s.kind, (versions or {}).get(s.name, version), s.database, s.role,
                               s.load_balanced, replication_enabled=s.role is not ReplicationRole.NONE,
                               in_rotation=s.load_balanced)
            for s in spec.servers()}
        self.databases = {d.name: FakeDatabase(d.name, (schemas or {}).get(d.name, version)) for d in spec.databases}

    # ------------------------------------------------------------ time

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        for s in self.servers.values():
            s.active_requests = 0 if not s.in_rotation else s.active_requests
            s.caught_up = True
            if s.phase is ServerPhase.INSTALLING and s.busy_until and self.now >= s.busy_until:
                self._finish_install(s)
        for db in self.databases.values():
            if db.migrating_to and db.migration_done_at and self.now >= db.migration_done_at:
                self._finish_migration(db)

    def _finish_install(self, s: FakeServer) -> None:
        if s.name in self.faults.install_fail:
            self.faults.install_fail.discard(s.name)
            s.phase, s.install_error = ServerPhase.FAILED, "msiexec returned 1603"
            self.journal.append(("install-failed", s.name, s.install_target or ""))
            return
        s.version = s.install_target or s.version
        s.settled_at = self.now
        self._settle_phase(s)
        self.journal.append(("installed", s.name, s.version))

    def _settle_phase(self, s: FakeServer) -> None:
        db = self.databases[s.database]
        if db.lock_holder and db.lock_holder != s.name:
            s.phase = ServerPhase.LOCKED_OUT
        elif RELEASES.index(db.schema) < RELEASES.index(s.version):
            s.phase = ServerPhase.DATABASE_UPDATES_REQUIRED
        elif db.schema != s.version:
            s.phase = ServerPhase.VERSION_MISMATCH
        else:
            s.phase = ServerPhase.RUNNING

    def _finish_migration(self, db: FakeDatabase) -> None:
        holder = self.servers[db.lock_holder or ""]
        if db.name in self.faults.migration_fail:
            self.faults.migration_fail.discard(db.name)
            db.migration = MigrationStatus.FAILED  # the schema stays; the portal says Failed until CLOSE
            self.journal.append(("migration-failed", db.name, db.migrating_to or ""))
        else:
            db.schema, db.migration = db.migrating_to or db.schema, MigrationStatus.UPGRADE_SUCCESSFUL
            self.journal.append(("migrated", db.name, db.schema))
        db.lock_holder, db.migrating_to, db.migration_done_at = None, None, None
        holder.settled_at = self.now
        for s in self.servers.values():
            if s.database == db.name:
                self._settle_phase(s)

    # ------------------------------------------------------------ observing

    def observe(self, period: float = 2.0) -> Observations:
        servers = tuple(ServerObservation(
            name=s.name, kind=self.spec.server(s.name).kind, version=s.version, phase=s.phase, database=s.database,
            install=InstallObservation(s.install_target, s.install_error), replication_role=s.role,
            replication_enabled=s.replication_enabled, caught_up=s.caught_up, load_balanced=s.load_balanced,
            in_rotation=s.in_rotation, active_requests=s.active_requests) for s in self.servers.values())
        databases = tuple(DatabaseObservation(
            name=d.name, schema_version=d.schema, lock_holder=d.lock_holder,
            updates_required=any(RELEASES.index(s.version) > RELEASES.index(d.schema)
                                 for s in self.servers.values() if s.database == d.name),
            migration=d.migration,
            backups=tuple(BackupObservation(i, True, self.now, b[0]) for i, b in d.backups.items()))
            for d in self.databases.values())
        health = {}
        for s in self.servers.values():
            ok = (s.phase is ServerPhase.RUNNING and self.now - s.settled_at >= timedelta(seconds=self.settle_seconds)
                  and s.name not in self.faults.never_healthy)
            streak = self.streaks.get(s.name, HealthStreak())
            if streak.due(self.now, period):
                streak = streak.record(ok, self.now, s.version)
                self.streaks[s.name] = streak
            health[s.name] = HealthObservation(ok, streak.consecutive, s.version, "ok" if ok else "503")
        return Observations.of(servers, databases, health)

    # ------------------------------------------------------------ acting (the agents' rules)

    def _refuse(self, action: Action, rule: str, message: str) -> None:
        self.journal.append(("refused", type(action).__name__, rule))
        raise PermanentError(Where(), message, rule=rule)

    def execute(self, action: Action) -> BackupObservation | None:
        match action:
            case DisableReplication(servers=names) | RestoreReplication(servers=names):
                on = isinstance(action, RestoreReplication)
                for n in names:
                    self.servers[n].replication_enabled = on
                    self.servers[n].caught_up = not on
                    self.journal.append(("replication", n, "on" if on else "off"))
            case TakeOutOfRotation(servers=names) | BringIntoRotation(servers=names):
                on = isinstance(action, BringIntoRotation)
                for n in names:
                    if not on:
                        self.servers[n].active_requests = 1
                    self.servers[n].in_rotation = on
                    self.journal.append(("rotation", n, "in" if on else "out"))
            case InstallServer(server=name, version=version):
                self._install(action, self.servers[name], version)
            case UpgradeSchema(server=name, database=db_name, version=version):
                self._migrate(action, self.servers[name], self.databases[db_name], version)
            case BackupDatabase(database=db_name, backup_id=bid):
                db = self.databases[db_name]
                if bid not in db.backups:
                    db.backups[bid] = (db.schema, db.data)
                    self.journal.append(("backup", db_name, bid))
                return BackupObservation(bid, True, self.now, db.backups[bid][0])
            case RestoreBackup(database=db_name, backup_id=bid):
                db = self.databases[db_name]
                db.schema, db.data = db.backups[bid]
                self.journal.append(("restore", db_name, bid))
                for s in self.servers.values():
                    if s.database == db_name and s.phase is not ServerPhase.INSTALLING:
                        self._settle_phase(s)
            case _:
                raise AssertionError(f"not an effect: {action}")
        return None

    def _install(self, action: Action, s: FakeServer, version: str) -> None:
        if s.version == version and s.phase is not ServerPhase.FAILED:
            return
        if s.phase in (ServerPhase.INSTALLING, ServerPhase.MIGRATING_SCHEMA):
            raise TransientError(Where(server=s.name), "busy", rule="busy")
        if any(o.replication_enabled for o in self.servers.values()):
            self._refuse(action, "replication-enabled", "replication is enabled")
        if any(o.load_balanced and o.in_rotation for o in self.servers.values()):
            self._refuse(action, "in-rotation", "a load-balanced server is in rotation")
        if abs(RELEASES.index(version) - RELEASES.index(s.version)) > 2:
            self._refuse(action, "version-jump", f"{s.version} -> {version}")
        if self.databases[s.database].lock_holder not in (None, s.name):
            raise TransientError(Where(server=s.name), "schema locked", rule="schema-locked")
        s.phase, s.install_target, s.install_error = ServerPhase.INSTALLING, version, None
        s.busy_until = self.now + timedelta(seconds=self.install_seconds)
        self.journal.append(("install", s.name, version))
        installing = sum(o.phase is ServerPhase.INSTALLING for o in self.servers.values())
        self.max_installing = max(self.max_installing, installing)

    def _migrate(self, action: Action, s: FakeServer, db: FakeDatabase, version: str) -> None:
        if db.lock_holder is not None:
            raise TransientError(Where(database=db.name), "busy", rule="busy")
        if s.version != version or db.schema == version:
            self._refuse(action, "version-mismatch", f"{s.name} runs {s.version}, schema {db.schema}")
        if any(o.replication_enabled for o in self.servers.values()):
            self._refuse(action, "replication-enabled", "replication is enabled")
        db.lock_holder, db.migrating_to, db.migration = s.name, version, MigrationStatus.UPGRADING
        db.migration_done_at = self.now + timedelta(seconds=self.migration_seconds)
        s.phase = ServerPhase.MIGRATING_SCHEMA
        for other in self.servers.values():
            if other.database == db.name and other.name != s.name and other.phase is not ServerPhase.FAILED:
                other.phase = ServerPhase.LOCKED_OUT
        self.journal.append(("migrate", db.name, version))

    def ops(self, kind: str) -> list[tuple[str, ...]]:
        return [e for e in self.journal if e[0] == kind]


@dataclass
class Run:
    status: UpgradePlanStatus
    actions: list[Action]
    cycles: int


def drive(spec: UpgradePlanSpec, estate: FakeEstate, *, status: UpgradePlanStatus | None = None,
          crash_at: Iterable[tuple[int, str]] = (), approval: str | None = None, max_cycles: int = 3000,
          limits: Limits | None = None, on_cycle: Callable[[int, UpgradePlanStatus], UpgradePlanSpec] | None = None,
          ) -> Run:
    """The handler's loop against `estate`. `crash_at` = {(cycle, "before-effect" | "after-effect")}:
    the process dies there, losing the status not yet written and the in-memory health streaks."""
    crashes = set(crash_at)
    stored = status or UpgradePlanStatus()
    actions: list[Action] = []
    kwargs = {"limits": limits} if limits else {}
    for cycle in range(max_cycles):
        if on_cycle is not None:
            spec = on_cycle(cycle, stored)
        seen = estate.observe(float(spec.health_check.period_seconds))
        current = record_observations(stored, spec, seen, estate.now)
        action = decide(spec, current, seen, estate.now, approval=approval, **kwargs)
        actions.append(action)
        if isinstance(action, Idle) or (stored.phase in TERMINAL_PHASES):
            return Run(stored, actions, cycle)
        decided = apply_decision(current, action, estate.now)
        if (cycle, "before-effect") in crashes:
            estate.streaks.clear()
            estate.advance(1.0)
            continue
        stored = decided
        if action.effect:
            try:
                result = estate.execute(action)
            except UpgradeError as exc:
                stored = apply_error(stored, action, exc, estate.now)
            else:
                if (cycle, "after-effect") in crashes:
                    estate.streaks.clear()
                    estate.advance(1.0)
                    continue
                stored = apply_result(stored, action, result, estate.now)
        wait = requeue_after(action)
        estate.advance(max(1.0, min(wait if wait is not None else 30.0, 10.0)))
    return Run(stored, actions, max_cycles)


def spec_with(spec: UpgradePlanSpec, **changes: Any) -> UpgradePlanSpec:
    return spec.model_copy(update=changes)


__all__ = ["RELEASES", "T0", "FakeEstate", "Run", "drive", "make_spec", "replace", "spec_with"]
