"""Which steps of an InPlace hop wait for which: the hop as lanes that run side by side.

Why: the guide orders some work and lets the rest overlap. `decide()` answers every step whose lane has
reached it (`UpgradeStrategy.lanes`); the engine carries their effects out together. An InPlace hop:

- the prelude: replication off on the master and every subscriber, and the pool out of rotation, at once
  (the guide wants both before any server is upgraded);
- one lane per database: its backup and its first server's install at once (the install does not touch
  the schema), then the schema upgrade through that server (it needs both); once the schema is upgraded
  (at the target, the portal saying Upgrade Successful), its verification (no Database Updates Required,
  CLOSE) and the first server's status page at once; the databases' lanes run side by side;
- the bounded group: once a database's schema is upgraded, its other servers, each installed then
  checked; `maxConcurrentServers` bounds every server in flight, first servers included
  (`Context.in_flight`), so `1` means one server down at a time;
- the tail: once every server of the hop is done, back into rotation and replication back on at once,
  then the subscribers' catch-up.

A step this module does not know (none today) waits for the step before it, in plan order.
"""

from __future__ import annotations

from collections.abc import Sequence

from .enums import StepName
from .models import StepKey, StepStatus, UpgradePlanSpec

PRELUDE = frozenset({StepName.DISABLE_REPLICATION, StepName.TAKE_OUT_OF_ROTATION})
TAIL = frozenset({StepName.BRING_INTO_ROTATION, StepName.RESTORE_REPLICATION, StepName.VERIFY_REPLICATION})
DATABASE_STEPS = frozenset({StepName.BACKUP_DATABASE, StepName.INSTALL_FIRST_SERVER, StepName.UPGRADE_SCHEMA,
                            StepName.VERIFY_SCHEMA})


def in_place_lanes(spec: UpgradePlanSpec, section: Sequence[StepStatus]) -> dict[StepKey, tuple[StepKey, ...]]:
    """For every step of an InPlace hop, the steps it waits for (linear in the number of steps)."""
    database_of = {s.name: s.database for s in spec.servers()}
    prelude = tuple(s.key for s in section if s.name in PRELUDE)
    lane: dict[tuple[str | None, StepName], StepKey] = {}
    firsts: dict[str, str | None] = {}
    installs: dict[str, StepKey] = {}
    for s in section:
        if s.name in DATABASE_STEPS:
            lane[(s.database, s.name)] = s.key
        if s.name is StepName.INSTALL_FIRST_SERVER and s.server:
            firsts[s.server] = s.database
        elif s.name is StepName.INSTALL_SERVER and s.server:
            installs[s.server] = s.key
    middle = tuple(s.key for s in section if s.name not in PRELUDE and s.name not in TAIL)
    after: dict[StepKey, tuple[StepKey, ...]] = {}
    previous: tuple[StepKey, ...] = ()
    for s in section:
        name, db = s.name, s.database
        if name in PRELUDE:
            deps: tuple[StepKey, ...] = ()
        elif name in (StepName.BACKUP_DATABASE, StepName.INSTALL_FIRST_SERVER):
            deps = prelude
        elif name is StepName.UPGRADE_SCHEMA:
            deps = _known(lane, (db, StepName.INSTALL_FIRST_SERVER), (db, StepName.BACKUP_DATABASE)) or prelude
        elif name is StepName.VERIFY_SCHEMA:
            deps = _known(lane, (db, StepName.UPGRADE_SCHEMA)) or prelude
        elif name is StepName.HEALTH_CHECK and s.server in firsts:
            deps = _known(lane, (firsts[s.server], StepName.UPGRADE_SCHEMA)) or prelude
        elif name is StepName.HEALTH_CHECK and s.server in installs:
            deps = (installs[s.server],)
        elif name is StepName.INSTALL_SERVER:
            deps = _known(lane, (database_of.get(s.server or ""), StepName.UPGRADE_SCHEMA)) or prelude
        elif name in (StepName.BRING_INTO_ROTATION, StepName.RESTORE_REPLICATION):
            deps = prelude + middle
        elif name is StepName.VERIFY_REPLICATION:
            deps = tuple(k for k in after if k.name is StepName.RESTORE_REPLICATION) or previous
        else:
            deps = previous
        after[s.key] = deps
        previous = (s.key,)
    return after


def _known(lane: dict[tuple[str | None, StepName], StepKey], *wanted: tuple[str | None, StepName]
           ) -> tuple[StepKey, ...]:
    return tuple(lane[w] for w in wanted if w in lane)
