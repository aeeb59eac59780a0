"""The upgrade guide's rules as pure functions over snapshots of the estate.

Why pure: every rule (replication off before an install, at most 2 major releases per step, the whole
load-balancer pool out of rotation before an upgrade, the database first, the schema lock-out, refusing
service on a version mismatch, back into rotation only once the status page confirms) is decided here
from plain data, so the rules are table-tested without a database or HTTP, and the views only gather a
snapshot, ask, and journal the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_MAJOR_JUMP = 2

RULE_REPLICATION = "replication-enabled"
RULE_JUMP = "version-jump"
RULE_ROTATION = "in-rotation"
RULE_LOCKED = "schema-locked"
RULE_UNKNOWN = "unknown-release"
RULE_BUSY = "busy"
RULE_MISMATCH = "version-mismatch"
RULE_NO_ROLE = "no-replication-role"
RULE_NOT_LB = "not-load-balanced"
RULE_NO_UPDATES = "no-updates-required"
RULE_FAILED = "install-failed"
RULE_POOL_ROTATION = "pool-in-rotation"
RULE_DATABASE_FIRST = "database-first"
RULE_REPLICATION_LOCKED = "replication-schema-locked"
RULE_GROUP_REPLICATION = "group-replication-enabled"
RULE_NOT_CONFIRMED = "status-not-confirmed"

# The tests a status page lists, in order (docs/contracts.md section 2a); the `test-fail` fault names one.
STATUS_TESTS = ("Web service started and settled", "Installation complete", "Database connection",
                "Database not locked for a schema upgrade", "Server release matches database schema")


class Phase(StrEnum):
    RUNNING = "Running"
    STARTING = "Starting"
    INSTALLING = "Installing"
    UPDATES_REQUIRED = "DatabaseUpdatesRequired"
    MIGRATING = "MigratingSchema"
    LOCKED_OUT = "LockedOut"
    MISMATCH = "VersionMismatch"
    FAILED = "Failed"


# Phases in which the server refuses service (status page 503, no traffic served).
NOT_SERVING = frozenset({Phase.INSTALLING, Phase.UPDATES_REQUIRED, Phase.MIGRATING, Phase.LOCKED_OUT,
                         Phase.MISMATCH, Phase.FAILED})


class Refusal(Exception):  # noqa: N818 -- a decision of the rules, not an error
    """A request the guide forbids: `rule` is the contract's rule id, `reason` the sentence for humans."""

    def __init__(self, rule: str, reason: str, status: int = 409) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Catalog:
    """The ordered release catalog, oldest first; a major release is one position."""

    releases: tuple[str, ...]

    def position(self, version: str | None) -> int | None:
        try:
            return self.releases.index(version) if version is not None else None
        except ValueError:
            return None

    def compare(self, a: str | None, b: str | None) -> int | None:
        """-1, 0 or 1 as `a` is older, the same or newer than `b`; None when either is unknown."""
        pa, pb = self.position(a), self.position(b)
        if pa is None or pb is None:
            return None
        return (pa > pb) - (pa < pb)

    def jump(self, a: str | None, b: str | None) -> int | None:
        pa, pb = self.position(a), self.position(b)
        return None if pa is None or pb is None else abs(pb - pa)

    def steps(self, a: str, b: str) -> tuple[str, ...]:
        """The releases a schema passes through from `a` (exclusive) up to `b` (inclusive)."""
        pa, pb = self.position(a), self.position(b)
        if pa is None or pb is None or pb <= pa:
            return ()
        return self.releases[pa + 1:pb + 1]


@dataclass(frozen=True)
class ServerState:
    """One server as the state database records it."""

    name: str
    kind: str
    database: str
    version: str
    repl_role: str = "None"
    repl_group: str | None = None
    repl_enabled: bool = False
    repl_changed_at: float = 0.0
    load_balanced: bool = False
    in_rotation: bool = False
    started_at: float = 0.0
    install_target: str | None = None
    install_started: float | None = None
    install_finished: float | None = None
    install_error: str | None = None
    install_fault: str | None = None
    install_seconds: float = 0.0
    url: str | None = None

    @property
    def installing(self) -> bool:
        return self.install_target is not None and self.install_finished is None

    @property
    def replicated(self) -> bool:
        return self.repl_role != "None"


@dataclass(frozen=True)
class GroupMember:
    """What enabling replication reads of each member of the group (`store.group_members`)."""

    name: str
    database: str
    version: str
    installing: bool


@dataclass(frozen=True)
class DatabaseState:
    """A UWM database's schema version and schema-lock holder (None when unreachable)."""

    name: str
    schema_version: str | None
    lock_holder: str | None = None
    reachable: bool = True


def compute_phase(me: ServerState, db: DatabaseState, catalog: Catalog, now: float, settle: float) -> Phase:
    if me.installing:
        return Phase.INSTALLING
    if db.lock_holder == me.name:
        return Phase.MIGRATING
    if db.lock_holder:
        return Phase.LOCKED_OUT
    if me.install_error or not db.reachable:
        return Phase.FAILED
    cmp = catalog.compare(me.version, db.schema_version)
    if cmp is not None and cmp > 0:
        return Phase.UPDATES_REQUIRED
    if cmp != 0:
        return Phase.MISMATCH
    if now - me.started_at < settle:
        return Phase.STARTING
    return Phase.RUNNING


def status_tests(me: ServerState, db: DatabaseState, phase: Phase, now: float,
                 settle: float) -> list[tuple[str, bool]]:
    """The status page's tests (names of `STATUS_TESTS`) and whether each passes."""
    passed = (phase is not Phase.STARTING and now - me.started_at >= settle,
              not me.installing and not me.install_error,
              db.reachable,
              db.lock_holder is None,
              db.schema_version == me.version)
    return list(zip(STATUS_TESTS, passed, strict=True))


def held_release(s: ServerState) -> str | None:
    """The release a server runs or is installing; None when its install of the release it runs failed
    (a failed install holds nothing new: it leaves the server at its previous release)."""
    if s.installing:
        return s.install_target
    if s.install_error and s.install_target == s.version:
        return None
    return s.version


def updates_required(me: ServerState, db: DatabaseState, catalog: Catalog) -> bool:
    cmp = catalog.compare(me.version, db.schema_version)
    return cmp is not None and cmp > 0 and not me.installing


def caught_up(me: ServerState, group: Sequence[ServerState], now: float, delay: float) -> bool:
    """A subscriber has caught up once replication has been on, at the master's release, for `delay`."""
    if me.repl_role == "None":
        return True
    if me.repl_role == "Master":
        return me.repl_enabled
    master = next((s for s in group if s.repl_role == "Master"), None)
    if not me.repl_enabled or master is None or not master.repl_enabled or master.version != me.version:
        return False
    return now >= max(me.repl_changed_at, master.repl_changed_at) + delay


def _enabled_in(group: Sequence[ServerState]) -> list[str]:
    return sorted(s.name for s in group if s.replicated and s.repl_enabled)


def check_install(me: ServerState, target: str, catalog: Catalog, group: Sequence[ServerState],
                  db: DatabaseState, *, pool: Sequence[ServerState] = (), same_db: Sequence[ServerState] = (),
                  replicated: Sequence[ServerState] = ()) -> bool:
    """True to install, False for a no-op (already at `target`); raises `Refusal` when the guide forbids it.

    `group`: its own replication group; `pool`: the members of its load-balancer pools; `same_db`: the servers
    of its database; `replicated`: the members of every replication group with a server on its database.
    """
    if catalog.position(target) is None:
        raise Refusal(RULE_UNKNOWN, f"release {target!r} is not in the catalog ({', '.join(catalog.releases)})")
    if me.installing:
        raise Refusal(RULE_BUSY, f"an install of {me.install_target} is already in progress on {me.name}")
    if db.lock_holder == me.name:
        raise Refusal(RULE_BUSY, f"{me.name} is upgrading the schema of database {db.name}")
    if target == me.version and not me.install_error:
        return False
    if db.lock_holder:
        raise Refusal(RULE_LOCKED, f"database {db.name} is locked by {db.lock_holder} for a schema upgrade; "
                                   "every other server of that database is locked out until it completes")
    jump = catalog.jump(me.version, target)
    if jump is None or jump > MAX_MAJOR_JUMP:
        raise Refusal(RULE_JUMP, f"{me.version} -> {target} is a jump of {jump} major releases; "
                                 f"at most {MAX_MAJOR_JUMP} per step")
    schema_jump = catalog.jump(db.schema_version, target)
    if (catalog.compare(target, db.schema_version) or 0) > 0 and (schema_jump or 0) > MAX_MAJOR_JUMP:
        raise Refusal(RULE_JUMP, f"database {db.name} is at schema {db.schema_version}; {target} would need a "
                                 f"schema jump of {schema_jump} major releases; at most {MAX_MAJOR_JUMP} per step")
    _check_replication_off(me, group, replicated, db)
    _check_pool_out(me, pool)
    _check_database_first(me, target, catalog, same_db, db)
    return True


def _check_replication_off(me: ServerState, group: Sequence[ServerState], replicated: Sequence[ServerState],
                           db: DatabaseState) -> None:
    enabled = _enabled_in(group) if me.replicated else []
    if enabled:
        raise Refusal(RULE_REPLICATION, f"replication is enabled on {', '.join(enabled)} of replication group "
                                        f"{me.repl_group}; disable it on the master and all subscribers first")
    elsewhere = _enabled_in(replicated)
    if elsewhere:
        raise Refusal(RULE_GROUP_REPLICATION, f"replication is enabled on {', '.join(elsewhere)}, in a replication "
                                              f"group with servers on database {db.name}; upgrades cannot be "
                                              "performed while replication is enabled")


def _check_pool_out(me: ServerState, pool: Sequence[ServerState]) -> None:
    if not me.load_balanced:
        return
    if me.in_rotation:
        raise Refusal(RULE_ROTATION, f"{me.name} is load-balanced and still in rotation; "
                                     "take it out of rotation before upgrading it")
    serving = sorted(s.name for s in pool if s.name != me.name and s.load_balanced and s.in_rotation)
    if serving:
        raise Refusal(RULE_POOL_ROTATION, f"{', '.join(serving)} of {me.name}'s load-balancer pool still in "
                                          "rotation; all servers of the pool are taken offline before upgrading")


def _check_database_first(me: ServerState, target: str, catalog: Catalog, same_db: Sequence[ServerState],
                          db: DatabaseState) -> None:
    """While the schema is behind, the one server that holds a release ahead of it is the first server: no
    other server of the database takes a release ahead of the schema until the schema has caught up."""
    if (catalog.compare(target, db.schema_version) or 0) <= 0:
        return
    first = sorted(f"{s.name} ({held})" for s in same_db if s.name != me.name
                   and (held := held_release(s)) is not None and (catalog.compare(held, db.schema_version) or 0) > 0)
    if first:
        raise Refusal(RULE_DATABASE_FIRST, f"{', '.join(first)} is ahead of database {db.name} (schema "
                                           f"{db.schema_version}): the first server to be upgraded also upgrades "
                                           f"the database, and every other server waits until the schema is at "
                                           "its release")


def check_replication(me: ServerState, enabled: bool, group: Sequence[GroupMember | ServerState],
                      databases: Sequence[DatabaseState] = ()) -> None:
    """`databases`: the databases of the group's members (a schema lock there forbids enabling)."""
    if not me.replicated:
        raise Refusal(RULE_NO_ROLE, f"{me.name} has no replication role")
    if not enabled:
        return
    busy = sorted(s.name for s in group if s.installing)
    if busy:
        raise Refusal(RULE_BUSY, f"cannot enable replication while {', '.join(busy)} is installing")
    locked = sorted(f"{d.name} (by {d.lock_holder})" for d in databases if d.lock_holder)
    if locked:
        raise Refusal(RULE_REPLICATION_LOCKED, f"database {', '.join(locked)} of replication group {me.repl_group} "
                                               "is locked for a schema upgrade; enable replication once it is done")
    versions = sorted({f"{s.name}={s.version}" for s in group})
    if len({s.version for s in group}) > 1:
        raise Refusal(RULE_MISMATCH, f"servers of replication group {me.repl_group} run different releases "
                                     f"({', '.join(versions)}); upgrade all of them before enabling replication")


def check_rotation(me: ServerState, in_rotation: bool, phase: Phase, db: DatabaseState) -> None:
    if not me.load_balanced:
        raise Refusal(RULE_NOT_LB, f"{me.name} is not load-balanced")
    if not in_rotation:
        return
    if phase is Phase.INSTALLING:
        raise Refusal(RULE_BUSY, f"{me.name} is installing {me.install_target}")
    if phase in (Phase.MIGRATING, Phase.LOCKED_OUT):
        raise Refusal(RULE_LOCKED, f"database {db.name} is locked by {db.lock_holder} for a schema upgrade")
    if phase in (Phase.MISMATCH, Phase.UPDATES_REQUIRED):
        raise Refusal(RULE_MISMATCH, f"{me.name} runs {me.version} but database {db.name} is at schema "
                                     f"{db.schema_version}; it refuses service")
    if phase is Phase.FAILED:
        why = me.install_error or "database unreachable"
        raise Refusal(RULE_FAILED, f"the last install on {me.name} failed: {why}")
    if phase is Phase.STARTING:
        raise Refusal(RULE_NOT_CONFIRMED, f"{me.name} is starting: its status page has not confirmed the "
                                          "connection yet; bring it back into rotation once it does")


def check_migration(me: ServerState, db: DatabaseState, catalog: Catalog, same_db: Sequence[ServerState],
                    replicated: Sequence[ServerState]) -> tuple[str, ...]:
    """The schema steps to apply when `me` upgrades its database; raises `Refusal` when it must not."""
    if db.lock_holder == me.name:
        raise Refusal(RULE_BUSY, f"{me.name} is already upgrading database {db.name}")
    if db.lock_holder:
        raise Refusal(RULE_LOCKED, f"database {db.name} is locked by {db.lock_holder} for a schema upgrade")
    if me.installing:
        raise Refusal(RULE_BUSY, f"{me.name} is installing {me.install_target}")
    if not updates_required(me, db, catalog) or db.schema_version is None:
        raise Refusal(RULE_NO_UPDATES, f"database {db.name} (schema {db.schema_version}) is not behind "
                                       f"{me.name}'s release {me.version}")
    jump = catalog.jump(db.schema_version, me.version) or 0
    if jump > MAX_MAJOR_JUMP:
        raise Refusal(RULE_JUMP, f"schema {db.schema_version} -> {me.version} is a jump of {jump} major releases; "
                                 f"at most {MAX_MAJOR_JUMP} per step")
    busy = sorted(s.name for s in same_db if s.installing and s.name != me.name)
    if busy:
        raise Refusal(RULE_BUSY, f"{', '.join(busy)} of database {db.name} is installing")
    enabled = _enabled_in(replicated)
    if enabled:
        raise Refusal(RULE_REPLICATION, f"replication is enabled on {', '.join(enabled)}; "
                                        "upgrades cannot be performed while replication is enabled")
    return catalog.steps(db.schema_version, me.version)
