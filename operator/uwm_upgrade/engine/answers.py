"""Which servers a turn's effects may have changed, and which answers to them say what the turn left.

Why: after its effects a turn no longer knows the states of the servers they touched (`touched`: a long
poll sent before may bring a state from before them), and the next turn would ask each of them again,
200 requests after one DisableReplication of a wide plan. But an agent answers a change with its state
once the change is made (docs/contracts.md section 2), so that answer is the server's state as this turn
left it whenever nothing else of the turn may have changed it too (`adoptable`): exactly one answer, from
the only effect that touched the server; for a Subscriber, no other effect touched a Master (whose release
and replication decide its catch-up). Any other touched server is asked, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..adapters.servers import AgentState
from ..core.actions import ClientEffect, ClosePortal, Effect, InstallServer, RestoreBackup, ServersEffect, UpgradeSchema
from ..core.enums import ReplicationRole
from ..core.models import UpgradePlanSpec


def touches(spec: UpgradePlanSpec, effect: Effect) -> frozenset[str]:
    """The servers whose state one effect may change: its own, and for a schema upgrade, a CLOSE or a
    restore every server of that database; a change of the client configuration, every server."""
    match effect:
        case ServersEffect(servers=names):
            return frozenset(names)
        case InstallServer(server=name):
            return frozenset({name})
        case UpgradeSchema(database=db) | ClosePortal(database=db) | RestoreBackup(database=db):
            return frozenset(s.name for s in (*spec.servers(), *spec.replacement_servers()) if s.database == db)
        case ClientEffect():
            return frozenset(s.name for s in (*spec.servers(), *spec.replacement_servers()))
    return frozenset()


def touched(spec: UpgradePlanSpec, effects: Sequence[Effect]) -> set[str]:
    """The servers whose state the effects may have changed."""
    return set().union(*(touches(spec, e) for e in effects))


def adoptable(spec: UpgradePlanSpec, effects: Sequence[Effect],
              answered: Mapping[str, Sequence[AgentState]]) -> dict[str, AgentState]:
    """The answered states that are their server's state as the turn left it (see the module's why)."""
    per = [touches(spec, e) for e in effects]
    roles = {s.name: s.role for s in (*spec.servers(), *spec.replacement_servers())}
    masters = {name for name, role in roles.items() if role is ReplicationRole.MASTER}
    kept: dict[str, AgentState] = {}
    for name, states in answered.items():
        owners = [i for i, names in enumerate(per) if name in names]
        if len(states) != 1 or len(owners) != 1 or states[0].name != name:
            continue
        if roles.get(name) is ReplicationRole.SUBSCRIBER and any(
                masters & names for i, names in enumerate(per) if i != owners[0]):
            continue
        kept[name] = states[0]
    return kept
