"""What deleting a plan mid-run does before its finalizer goes: put rotation and replication back.

The plan's daemon has already stopped at a safe point (it checks its stop flag only between actions).
Here the estate is observed once more; while an install or a schema migration is still running the
teardown waits (the servers must finish what they were asked). Then every load-balanced server that was
in rotation before the plan and can serve goes back into rotation, and replication is enabled again
where it was enabled before (the Master first). What the guide does not allow yet (for example a
server whose release differs from its schema cannot take traffic) is reported, not forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..adapters.servers import ServerClient, ServerError
from ..core.enums import ReplicationRole, ReplicationState, ServerPhase
from ..core.models import UpgradePlanSpec, UpgradePlanStatus
from ..core.observations import Observations


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


def started(status: UpgradePlanStatus) -> bool:
    return any(s.replication_before is not None or s.online_before is not None for s in status.servers)


def pending_work(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations) -> TeardownResult:
    """Pure: which servers are still busy, or still starting (just installed) while they are to go back
    into rotation once they serve; the caller waits for them before restoring anything."""
    result = TeardownResult()
    for server in spec.servers():
        obs = seen.servers.get(server.name)
        if obs is None:
            continue
        recorded = status.server(server.name)
        returning = (server.load_balanced and recorded is not None and recorded.online_before is not False
                     and not obs.in_rotation)
        if obs.busy or (returning and obs.phase is ServerPhase.STARTING):
            result.waiting_for.append(f"{server.name} ({obs.phase})")
    return result


def restorations(spec: UpgradePlanSpec, status: UpgradePlanStatus,
                 seen: Observations) -> tuple[list[str], list[str], list[str]]:
    """Pure: (servers to bring into rotation, servers to re-enable replication on, Master first, notes)."""
    rotation, replication, notes = [], [], []
    replaced = {r.old.name: r.new.name for r in spec.replacements()}  # strategy CleanInstall
    for server in spec.servers():
        recorded = status.server(server.name)
        obs = seen.servers.get(server.name)
        if server.name in replaced and obs is not None and not obs.online:
            notes.append(f"{server.name}: retired (offline), replaced by {replaced[server.name]}")
            continue
        if recorded is None or obs is None:
            if recorded is not None and obs is None:
                notes.append(f"{server.name}: not reachable")
            continue
        was_online = recorded.online_before if recorded.online_before is not None else True
        if server.load_balanced and was_online and not obs.in_rotation:
            if obs.phase is ServerPhase.RUNNING:
                rotation.append(server.name)
            else:
                notes.append(f"{server.name}: cannot go back into rotation while {obs.phase}")
        if recorded.replication_before is ReplicationState.ENABLED and not obs.replication_enabled:
            replication.append(server.name)
    replication.sort(key=lambda n: 0 if spec.server(n).role is ReplicationRole.MASTER else 1)
    return rotation, replication, notes


async def restore(client_calls: ServerClient, spec: UpgradePlanSpec, status: UpgradePlanStatus,
                  seen: Observations) -> TeardownResult:
    result = TeardownResult()
    rotation, replication, notes = restorations(spec, status, seen)
    result.refused.extend(notes)
    for name in rotation:
        try:
            await client_calls.set_rotation(name, spec.server(name).url, True)
            result.restored.append(f"{name} back in rotation")
        except ServerError as exc:
            result.refused.append(f"{name} rotation: {exc}")
    for name in replication:
        try:
            await client_calls.set_replication(name, spec.server(name).url, True)
            result.restored.append(f"replication on {name}")
        except ServerError as exc:
            result.refused.append(f"{name} replication: {exc}")
    return result


class MustWaitError(Exception):
    """The teardown must wait (a server is still installing or migrating); the handler retries."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay
