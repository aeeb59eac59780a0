"""What deleting a plan puts back, decided from the estate as observed (the engine does the calls).

A plan deleted mid-run, or one that halted (`Failed`: it left the pool out of rotation and replication
off where it stopped), gets back what is safe, as its baseline recorded it (`needs_teardown`); a plan that
succeeded or rolled back already put everything back, and one that never started changed nothing.
The plan's loop has already stopped at a safe point. While an install or a schema migration is still
running, or a just-installed server that is to go back into rotation is still starting, the teardown
waits (`pending_work`). Then every load-balanced server that was in rotation before the plan and can
serve goes back into rotation, and replication is enabled again where it was enabled before, the Master
first (`restorations`). What the guide does not allow yet is reported, not forced: a server whose release
differs from its schema cannot take traffic, and replication comes back only when every server of the
group runs one release, none of them installing or failed; a replaced server that went offline
(strategy CleanInstall) is retired, and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .baseline import replication_to_restore, retired, rotation_to_restore
from .enums import Phase, ServerPhase
from .models import UpgradePlanSpec, UpgradePlanStatus
from .observations import Observations


@dataclass
class TeardownResult:
    restored: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    waiting_for: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.restored:
            parts.append("restored: " + "; ".join(self.restored))
        if self.refused:
            parts.append("NOT restored: " + "; ".join(self.refused))
        return ". ".join(parts) or "nothing to restore"


def needs_teardown(status: UpgradePlanStatus) -> bool:
    """Whether deleting the plan must put rotation and replication back: it started, and it neither
    succeeded nor rolled back (both end with everything as before the plan)."""
    return status.started and status.phase not in (Phase.SUCCEEDED, Phase.ROLLED_BACK)


def pending_work(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations) -> TeardownResult:
    """Which servers are still busy, or still starting (just installed) while they are to go back
    into rotation once they serve; the caller waits for them before restoring anything."""
    result = TeardownResult()
    returning = {s.name for s in rotation_to_restore(spec, status)}
    for server in spec.servers():
        obs = seen.servers.get(server.name)
        if obs is None:
            continue
        back = server.name in returning and not obs.in_rotation
        if obs.busy or (back and obs.phase is ServerPhase.STARTING):
            result.waiting_for.append(f"{server.name} ({obs.phase})")
    return result


def restorations(spec: UpgradePlanSpec, status: UpgradePlanStatus,
                 seen: Observations) -> tuple[list[str], list[str], list[str]]:
    """(servers to bring into rotation, servers to re-enable replication on, Master first, notes)."""
    rotation, notes = [], []
    gone = retired(spec, seen)
    successors = {r.old.name: r.new.name for r in spec.replacements()}
    returning = {s.name for s in rotation_to_restore(spec, status)}
    for server in spec.servers():
        obs = seen.servers.get(server.name)
        if server.name in gone:
            notes.append(f"{server.name}: retired (offline), replaced by {successors[server.name]}")
        elif obs is None:
            notes.append(f"{server.name}: not reachable")
        elif server.name in returning and not obs.in_rotation:
            if obs.phase is ServerPhase.RUNNING:
                rotation.append(server.name)
            else:
                notes.append(f"{server.name}: cannot go back into rotation while {obs.phase}")
    wanted = [s for s in replication_to_restore(spec, status) if s.name not in gone]
    group = {s.name: seen.servers.get(s.name) for s in wanted}
    releases = {o.version for o in group.values() if o is not None}
    unfit = [f"{n} {o.version} {o.phase}" if o else f"{n} unobserved" for n, o in group.items()
             if o is None or o.busy or o.phase is ServerPhase.FAILED]
    if wanted and (unfit or len(releases) > 1):  # the guide: replication only among servers of one release
        notes.append("replication not enabled again: its servers must all run one release, none installing or"
                     " failed (" + ", ".join(unfit or [f"{n} {o.version}" for n, o in group.items() if o]) + ")")
        return rotation, [], notes
    replication = [n for n, o in group.items() if o is not None and not o.replication_enabled]
    return rotation, replication, notes
