"""The hop path and the steps of each hop, computed from the release catalog and the observed versions.

The guide: never more than 2 major releases per upgrade; the spec may lower that to 1. A *hop* moves the
whole estate from one catalog entry to another at most `maxMajorVersionsPerStep` positions later; the path
takes as few hops as the limit allows.

Mixed versions. When the servers and schemas observed before the plan are not all at one release (a
hop that was left half done: some servers upgraded, or a schema already migrated), the plan starts from
the *lowest* observed release, and every other observed release must lie within the first hop (no more
than `maxMajorVersionsPerStep` positions above the lowest): that first hop then brings the laggards up
and leaves the others as they are (installing a release a server already runs is a no-op). A wider
spread cannot be reconciled by one hop without breaking the guide for some server and is refused, as is
a version missing from the catalog and any server or schema beyond the target (no downgrades).

`plan_hash` is what a human approves: a stable sha256 over the path, every spec field but `paused` and
the databases the connection strings point at, so an approved plan pointed at another database, or with
more concurrency, needs a new approval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .enums import Reason, ReplicationRole, StepName, StepState
from .models import HopStatus, StepStatus, UpgradePlanSpec


class PlanningError(ValueError):
    """No path exists (or the spec cannot be planned); the message says which version or field is why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Hop:
    """One hop: 1-based `number`, from one catalog release to a later one."""

    number: int
    from_version: str
    to_version: str

    def as_status(self) -> HopStatus:
        return HopStatus(from_version=self.from_version, to_version=self.to_version)


def catalog_of(spec: UpgradePlanSpec) -> tuple[str, ...]:
    """The ordered release catalog (spec.releases is required: it counts the major releases per hop)."""
    return spec.releases


def position(catalog: Sequence[str], version: str, what: str) -> int:
    try:
        return list(catalog).index(version)
    except ValueError:
        raise PlanningError(Reason.PLANNING_FAILED,
                            f"{what} runs {version}, which is not in spec.releases ({', '.join(catalog)})") from None


def plan_path(catalog: Sequence[str], observed: Mapping[str, str], target: str, max_step: int) -> tuple[Hop, ...]:
    """The hops from the observed releases (`{"server ms-1": "2021.1", ...}`) to `target`.

    Empty when everything already runs the target. Raises `PlanningError` when no path exists.
    """
    if not 1 <= max_step <= 2:
        raise PlanningError(Reason.PLANNING_FAILED, f"spec.maxMajorVersionsPerStep {max_step} must be 1 or 2")
    if not observed:
        raise PlanningError(Reason.PLANNING_FAILED, "nothing was observed to plan from")
    goal = position(catalog, target, "spec.targetVersion")
    at = {what: position(catalog, version, what) for what, version in sorted(observed.items())}
    ahead = sorted(what for what, index in at.items() if index > goal)
    if ahead:
        raise PlanningError(Reason.PLANNING_FAILED, f"the target {target} is behind the current release of "
                            + ", ".join(f"{w} ({observed[w]})" for w in ahead) + "; downgrades are not supported")
    low, high = min(at.values()), max(at.values())
    if high - low > max_step:
        laggards = sorted(w for w, i in at.items() if i == low)
        leaders = sorted(w for w, i in at.items() if i == high)
        raise PlanningError(Reason.PLANNING_FAILED, (
            f"mixed versions cannot be reconciled: {', '.join(laggards)} at {catalog[low]} but "
            f"{', '.join(leaders)} at {catalog[high]}, {high - low} releases apart, more than "
            f"spec.maxMajorVersionsPerStep ({max_step}); bring the lagging servers within {max_step} releases"
            " of the others first"))
    hops: list[Hop] = []
    current = low
    while current < goal:
        step_to = min(current + max_step, goal)
        hops.append(Hop(len(hops) + 1, catalog[current], catalog[step_to]))
        current = step_to
    return tuple(hops)


def first_servers(spec: UpgradePlanSpec, leaders: Mapping[str, str] | None = None) -> dict[str, str]:
    """Per database, the server that upgrades it first (and so migrates its schema): its leader, if it
    has one (`leading_servers`), else the first in spec order."""
    chosen = leaders or {}
    return {db.name: chosen.get(db.name) or spec.servers_of(db.name)[0].name for db in spec.databases}


def leading_servers(spec: UpgradePlanSpec, versions: Mapping[str, str], schemas: Mapping[str, str],
                    catalog: Sequence[str]) -> dict[str, str]:
    """Per database left half upgraded (a server of it runs a release ahead of its schema, installed by
    hand or by a plan that halted): that server, the one furthest ahead (spec order breaks ties). It must
    be the first server of the hop: the servers refuse any other install until the schema is migrated
    (`database-first`), and it is the one that can migrate it."""
    order = {v: i for i, v in enumerate(catalog)}
    leaders = {}
    for db in spec.databases:
        schema = order.get(schemas.get(db.name, ""))
        ahead = [(order[versions[s.name]], -i, s.name) for i, s in enumerate(spec.servers_of(db.name))
                 if schema is not None and versions.get(s.name) in order and order[versions[s.name]] > schema]
        if ahead:
            leaders[db.name] = max(ahead)[2]
    return leaders


def new_step(name: StepName, hop: int, server: str | None = None, database: str | None = None,
             skip: str | None = None) -> StepStatus:
    """A step as planned: Pending, or Skipped with the reason why it has nothing to do."""
    state = StepState.SKIPPED if skip else StepState.PENDING
    return StepStatus(name=name, hop=hop, state=state, message=skip, server=server, database=database)


def _skips(spec: UpgradePlanSpec) -> tuple[str | None, str | None]:
    servers = spec.servers()
    replication = None if any(s.role is not ReplicationRole.NONE for s in servers) else \
        "no server has a replication role"
    rotation = None if any(s.load_balanced for s in servers) else "no server is load-balanced"
    return replication, rotation


def backup_step(spec: UpgradePlanSpec, hop: int, database: str) -> StepStatus:
    return new_step(StepName.BACKUP_DATABASE, hop, database=database,
                    skip=None if spec.backup.enabled else "spec.backup.enabled is false")


def database_first(spec: UpgradePlanSpec, hop: int, database: str, first: str) -> list[StepStatus]:
    """A database upgraded in place: its first server installs the release, upgrades the schema, which
    is verified, and its status page confirms."""
    return [new_step(StepName.INSTALL_FIRST_SERVER, hop, server=first, database=database),
            new_step(StepName.UPGRADE_SCHEMA, hop, server=first, database=database),
            new_step(StepName.VERIFY_SCHEMA, hop, database=database),
            new_step(StepName.HEALTH_CHECK, hop, server=first)]


def remaining_servers(spec: UpgradePlanSpec, hop: int, databases: Collection[str],
                      firsts: Collection[str]) -> list[StepStatus]:
    """The other servers of `databases` (upgraded in place), each installed then health-checked."""
    steps = []
    for server in spec.servers():
        if server.database in databases and server.name not in firsts:
            steps.append(new_step(StepName.INSTALL_SERVER, hop, server=server.name))
            steps.append(new_step(StepName.HEALTH_CHECK, hop, server=server.name))
    return steps


def in_place_hop(spec: UpgradePlanSpec, hop: int, leaders: Mapping[str, str]) -> list[StepStatus]:
    """strategy InPlace: each database backed up and upgraded from its first server, then the others."""
    firsts = first_servers(spec, leaders)
    steps = []
    for db in spec.databases:
        steps += [backup_step(spec, hop, db.name), *database_first(spec, hop, db.name, firsts[db.name])]
    return steps + remaining_servers(spec, hop, {db.name for db in spec.databases}, set(firsts.values()))


HopSteps = Callable[[UpgradePlanSpec, int, Mapping[str, str]], list[StepStatus]]


def plan_steps(spec: UpgradePlanSpec, path: Sequence[Hop], hop_steps: HopSteps = in_place_hop,
               leaders: Mapping[str, str] | None = None) -> tuple[StepStatus, ...]:
    """Every step of the plan in the order it runs: hop 0 (preflight, plan, baseline), then each hop:
    replication off and the pool out of rotation, the strategy's `hop_steps`, then the pool back into
    rotation and replication back as it was. `leaders` (`leading_servers`) are the first servers of the
    first hop only: after it, every server of a database runs the same release."""
    no_replication, no_rotation = _skips(spec)
    steps = [new_step(StepName.PREFLIGHT, 0), new_step(StepName.PLAN, 0), new_step(StepName.RECORD_BASELINE, 0)]
    for hop in path:
        n = hop.number
        steps.append(new_step(StepName.DISABLE_REPLICATION, n, skip=no_replication))
        steps.append(new_step(StepName.TAKE_OUT_OF_ROTATION, n, skip=no_rotation))
        steps += hop_steps(spec, n, (leaders or {}) if n == 1 else {})
        steps.append(new_step(StepName.BRING_INTO_ROTATION, n, skip=no_rotation))
        steps.append(new_step(StepName.RESTORE_REPLICATION, n, skip=no_replication))
        steps.append(new_step(StepName.VERIFY_REPLICATION, n, skip=no_replication))
    return tuple(steps)


def rollback_steps(spec: UpgradePlanSpec, hop: int) -> tuple[StepStatus, ...]:
    """The steps that undo hop `hop`: isolate the servers, restore backups, reinstall, reconnect."""
    no_replication, no_rotation = _skips(spec)
    steps = [new_step(StepName.ROLLBACK_DISABLE_REPLICATION, hop, skip=no_replication),
             new_step(StepName.ROLLBACK_TAKE_OUT_OF_ROTATION, hop, skip=no_rotation)]
    steps += [new_step(StepName.RESTORE_BACKUP, hop, database=db.name) for db in spec.databases]
    for server in spec.servers():
        steps.append(new_step(StepName.REINSTALL_PREVIOUS, hop, server=server.name))
        steps.append(new_step(StepName.ROLLBACK_HEALTH_CHECK, hop, server=server.name))
    steps += [new_step(StepName.ROLLBACK_BRING_INTO_ROTATION, hop, skip=no_rotation),
              new_step(StepName.ROLLBACK_RESTORE_REPLICATION, hop, skip=no_replication),
              new_step(StepName.ROLLBACK_VERIFY_REPLICATION, hop, skip=no_replication)]
    return tuple(steps)


# What the approval does not cover: when the plan works and how it is steered, not what it does.
UNAPPROVED = frozenset({"paused", "retry", "abort", "maintenance_window"})


def plan_hash(spec: UpgradePlanSpec, path: Sequence[Hop], database_targets: Mapping[str, str] | None = None,
              leaders: Mapping[str, str] | None = None, found: Sequence[str] = ()) -> str:
    """sha256 (hex) of what is approved: the path, every spec field but `UNAPPROVED`, the database each
    connection string names (`database_targets`: SERVER/PORT/DATABASE, never a password), the `leaders`
    that are not a database's default first server, and what the plan was `found` like and would leave so
    (`safety.Deviations`), when there are any. Equal plans hash equal across processes and releases: the
    spec is taken without its defaults, so a field a later release adds (with a default) leaves the hashes
    of existing plans as they were."""
    document: dict[str, object] = {
        "path": [[h.from_version, h.to_version] for h in path],
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude=set(UNAPPROVED)),
    }
    if database_targets is not None:
        document["databaseTargets"] = {name: database_targets.get(name) for name in sorted(database_targets)}
    default = first_servers(spec)
    moved = {db: name for db, name in (leaders or {}).items() if default.get(db) != name}
    if moved:
        document["firstServers"] = sorted(moved.items())
    if found:
        document["found"] = list(found)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def backup_id(plan_digest: str, started_at: datetime, hop: int) -> str:
    """The id of the backup taken before hop `hop` of this run: the same on every retry and after a crash,
    different for another run of an equal plan (the run's start time is part of it). `[a-z0-9-]{,41}`."""
    run = hashlib.sha256(f"{plan_digest}|{started_at.isoformat()}".encode()).hexdigest()[:16]
    return f"p{run}-h{hop}"


def lowest_version(catalog: Sequence[str], versions: Sequence[str]) -> str | None:
    """The oldest of `versions` by catalog order (unknown releases sort first: they are the surprise)."""
    if not versions:
        return None
    order = {v: i for i, v in enumerate(catalog)}
    return min(versions, key=lambda v: (order.get(v, -1), v))
