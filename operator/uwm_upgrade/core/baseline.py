"""What "as before the plan" means: the servers that go back into rotation and get replication back.

The baseline (`RecordBaseline`) records, per server, whether replication was enabled and whether a
load-balanced server was in rotation; `UpgradePlanStatus.replicated_before` and `.in_rotation_before`
read it. Putting it back is one question for the last steps of a hop, a rollback, and the teardown of a
deleted plan, with one twist of strategy CleanInstall: at the end of its hop the servers that replicate
are the new ones that replace those that did (`on_replacements`), and a replaced server that went
offline is retired: nothing goes back onto it.
"""

from __future__ import annotations

from .enums import ReplicationRole
from .models import Server, UpgradePlanSpec, UpgradePlanStatus
from .observations import Observations


def replicating(spec: UpgradePlanSpec) -> tuple[Server, ...]:
    """Servers with a replication role, the Master first (it is switched first, both ways)."""
    found = [s for s in spec.servers() if s.role is not ReplicationRole.NONE]
    return tuple(sorted(found, key=lambda s: s.role is not ReplicationRole.MASTER))


def replication_to_restore(spec: UpgradePlanSpec, status: UpgradePlanStatus, *,
                           on_replacements: bool = False) -> tuple[Server, ...]:
    """The servers replication goes back on, Master first: those that had it before the plan, or, with
    `on_replacements`, the new servers that replace them (strategy CleanInstall)."""
    successors = {r.old.name: r.new for r in spec.replacements()} if on_replacements else {}
    return tuple(successors.get(s.name, s) for s in replicating(spec) if status.replicated_before(s.name))


def rotation_to_restore(spec: UpgradePlanSpec, status: UpgradePlanStatus) -> tuple[Server, ...]:
    """The load-balanced servers that were in rotation before the plan."""
    return tuple(s for s in spec.servers() if s.load_balanced and status.in_rotation_before(s.name))


def retired(spec: UpgradePlanSpec, seen: Observations) -> frozenset[str]:
    """strategy CleanInstall: the replaced servers observed offline (their replacements serve instead)."""
    return frozenset(r.old.name for r in spec.replacements()
                     if r.old.name in seen.servers and not seen.servers[r.old.name].online)
