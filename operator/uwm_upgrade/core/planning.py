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

`plan_hash` is what a human approves: a stable sha256 over the path, the topology and the choices that
change what will be done to it (strategy, backups, failure policy).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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
    if not spec.releases:
        raise PlanningError(Reason.PLANNING_FAILED, "spec.releases is not given: the operator needs the ordered"
                            " release catalog to count major releases per hop")
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


def first_servers(spec: UpgradePlanSpec) -> dict[str, str]:
    """Per database, the server that upgrades it first (and so migrates its schema): the first in spec order."""
    return {db.name: spec.servers_of(db.name)[0].name for db in spec.databases}


def _step(name: StepName, hop: int, server: str | None = None, database: str | None = None,
          skip: str | None = None) -> StepStatus:
    state = StepState.SKIPPED if skip else StepState.PENDING
    return StepStatus(name=name, hop=hop, state=state, message=skip, server=server, database=database)


def _skips(spec: UpgradePlanSpec) -> tuple[str | None, str | None]:
    servers = spec.servers()
    replication = None if any(s.role is not ReplicationRole.NONE for s in servers) else \
        "no server has a replication role"
    rotation = None if any(s.load_balanced for s in servers) else "no server is load-balanced"
    return replication, rotation


def plan_steps(spec: UpgradePlanSpec, path: Sequence[Hop]) -> tuple[StepStatus, ...]:
    """Every step of the plan in the order it runs: hop 0 (preflight, plan, baseline), then each hop."""
    no_replication, no_rotation = _skips(spec)
    no_backup = None if spec.backup.enabled else "spec.backup.enabled is false"
    firsts = first_servers(spec)
    steps = [_step(StepName.PREFLIGHT, 0), _step(StepName.PLAN, 0), _step(StepName.RECORD_BASELINE, 0)]
    for hop in path:
        n = hop.number
        steps.append(_step(StepName.DISABLE_REPLICATION, n, skip=no_replication))
        steps.append(_step(StepName.TAKE_OUT_OF_ROTATION, n, skip=no_rotation))
        for db in spec.databases:
            first = firsts[db.name]
            steps.append(_step(StepName.BACKUP_DATABASE, n, database=db.name, skip=no_backup))
            steps.append(_step(StepName.INSTALL_FIRST_SERVER, n, server=first, database=db.name))
            steps.append(_step(StepName.UPGRADE_SCHEMA, n, server=first, database=db.name))
            steps.append(_step(StepName.VERIFY_SCHEMA, n, database=db.name))
            steps.append(_step(StepName.HEALTH_CHECK, n, server=first))
        for server in spec.servers():
            if server.name not in firsts.values():
                steps.append(_step(StepName.INSTALL_SERVER, n, server=server.name))
                steps.append(_step(StepName.HEALTH_CHECK, n, server=server.name))
        steps.append(_step(StepName.BRING_INTO_ROTATION, n, skip=no_rotation))
        steps.append(_step(StepName.RESTORE_REPLICATION, n, skip=no_replication))
        steps.append(_step(StepName.VERIFY_REPLICATION, n, skip=no_replication))
    return tuple(steps)


def rollback_steps(spec: UpgradePlanSpec, hop: int) -> tuple[StepStatus, ...]:
    """The steps that undo hop `hop`: isolate the servers, restore backups, reinstall, reconnect."""
    no_replication, no_rotation = _skips(spec)
    steps = [_step(StepName.ROLLBACK_DISABLE_REPLICATION, hop, skip=no_replication),
             _step(StepName.ROLLBACK_TAKE_OUT_OF_ROTATION, hop, skip=no_rotation)]
    steps += [_step(StepName.RESTORE_BACKUP, hop, database=db.name) for db in spec.databases]
    for server in spec.servers():
        steps.append(_step(StepName.REINSTALL_PREVIOUS, hop, server=server.name))
        steps.append(_step(StepName.ROLLBACK_HEALTH_CHECK, hop, server=server.name))
    steps += [_step(StepName.ROLLBACK_BRING_INTO_ROTATION, hop, skip=no_rotation),
              _step(StepName.ROLLBACK_RESTORE_REPLICATION, hop, skip=no_replication),
              _step(StepName.ROLLBACK_VERIFY_REPLICATION, hop, skip=no_replication)]
    return tuple(steps)


def plan_hash(spec: UpgradePlanSpec, path: Sequence[Hop]) -> str:
    """sha256 (hex) of the path and the topology: equal plans hash equal, across processes and releases."""
    document = {
        "path": [[h.from_version, h.to_version] for h in path],
        "servers": [[s.name, s.kind, s.url, s.database, s.load_balanced, s.role] for s in spec.servers()],
        "databases": [[d.name, d.kind] for d in spec.databases],
        "strategy": spec.strategy,
        "backup": spec.backup.enabled,
        "failurePolicy": spec.failure_policy,
    }
    if spec.replacements():  # strategy CleanInstall: the new servers and how clients move (absent otherwise)
        document["replacements"] = [[r.old.name, r.new.name, r.new.url, r.method, r.virtual_host]
                                    for r in spec.replacements()]
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
