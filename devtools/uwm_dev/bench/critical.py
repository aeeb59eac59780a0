"""The least time any operator could take for a plan, from what the servers imposed, and where the rest went.

Why from the journal: what the servers impose (an install's duration, a schema migration's, the settle
delay after an install, the subscribers' catch-up) is measured where it happened, in the simulators'
journal, never taken from the operator's status. The plan's dependency graph, as the guide allows it, is
then list-scheduled: per hop, every database's first server installs, upgrades its schema and settles
(its settle clock starts when its install ends, so it settles during the migration); each other server
of that database installs once the schema is migrated, then settles; at most `max_concurrent` servers
are in flight at once (from the start of their install to the end of their settle), first servers
included; when every server of the hop has settled, rotation and replication come back and the
subscribers catch up; the next hop starts after that. The makespan is the critical path; the wall time
above it is the operator's overhead, and `reactions()` says, edge by edge, how long the operator took to
act once a dependency was met.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..referee.audit import JournalEvent


@dataclass(frozen=True)
class Timing:
    settle: float
    caught_up: float


@dataclass
class HopWork:
    """What the servers did in one hop, as measured in the journal."""

    to: str
    installs: dict[str, tuple[float, float]] = field(default_factory=dict)  # server -> (accepted, complete)
    migrations: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # db -> (server, start, end)
    subscribers: set[str] = field(default_factory=set)


def hops_of(events: Iterable[JournalEvent], targets: Sequence[str]) -> list[HopWork]:
    """The installs and migrations of each hop (by its target release), from accepted request to completion."""
    work = {t: HopWork(t) for t in targets}
    started: dict[str, tuple[str, float]] = {}
    migrating: dict[str, tuple[str, str, float]] = {}
    for e in sorted(events, key=lambda e: e.seq):
        if e.op in ("register", "start"):
            snap = e.detail.get("snapshot") or {}
            if snap.get("role") == "Subscriber":
                for w in work.values():
                    w.subscribers.add(str(snap["name"]))
        if e.outcome != "ok" or e.server is None:
            continue
        if e.op == "install" and not e.detail.get("noop"):
            started[e.server] = (str(e.detail.get("to")), e.ts)
        elif e.op == "install-complete" and e.server in started:
            to, at = started.pop(e.server)
            if to in work:
                work[to].installs[e.server] = (at, e.ts)
        elif e.op == "schema-migrate" and e.database:
            migrating[e.database] = (e.server, str(e.detail.get("to")), e.ts)
        elif e.op == "schema-migrated" and e.database in migrating:
            server, to, at = migrating.pop(e.database)
            if to in work:
                work[to].migrations[e.database] = (server, at, e.ts)
    return [work[t] for t in targets]


@dataclass(order=True)
class _Task:
    ready: float
    priority: int
    name: str = field(compare=False)
    database: str = field(compare=False)
    first: bool = field(compare=False)


def schedule_hop(work: HopWork, databases: dict[str, list[str]], timing: Timing, max_concurrent: int,
                 start: float = 0.0) -> float:
    """The earliest end of one hop, from `start`, under the guide and the concurrency bound."""
    firsts = {db: m[0] for db, m in work.migrations.items()}
    duration = {s: end - begin for s, (begin, end) in work.installs.items()}
    migration = {db: end - begin for db, (_, begin, end) in work.migrations.items()}
    ready: list[_Task] = []
    order = 0
    for db, servers in databases.items():
        first = firsts.get(db)
        for server in servers:
            if server not in duration:
                continue  # already at the release: nothing to do
            if server == first:
                heapq.heappush(ready, _Task(start, order, server, db, True))
            order += 1
    later = {db: [s for s in servers if s in duration and s != firsts.get(db)] for db, servers in databases.items()}
    for db, servers in later.items():  # a database no server migrated (already at the release): no wait
        if db not in firsts:
            for server in servers:
                heapq.heappush(ready, _Task(start, 1000 + len(ready), server, db, False))
    running: list[float] = []  # when each server in flight is done (installed and settled)
    now, end, free = start, start, max_concurrent
    while ready or running:
        while ready and free > 0 and ready[0].ready <= now:
            task = heapq.heappop(ready)
            installed = now + duration[task.name]
            done = installed + timing.settle
            if task.first:  # its migration starts when its install ends; it settles meanwhile
                migrated = installed + migration.get(task.database, 0.0)
                done = max(done, migrated)
                for i, server in enumerate(later.get(task.database, [])):
                    heapq.heappush(ready, _Task(migrated, 1000 + i, server, task.database, False))
            heapq.heappush(running, done)
            free -= 1
            end = max(end, done)
        moments = running[:1] + ([ready[0].ready] if ready and free > 0 else [])
        if not moments:
            break
        now = max(now, min(moments))
        while running and running[0] <= now:
            heapq.heappop(running)
            free += 1
    replication = timing.caught_up if work.subscribers else 0.0
    return end + replication


def critical_path(events: Iterable[JournalEvent], targets: Sequence[str], databases: dict[str, list[str]],
                  timing: Timing, max_concurrent: int) -> float:
    """The sum over the hops of their earliest ends: what the servers impose, nothing else."""
    total = 0.0
    for work in hops_of(list(events), targets):
        total = schedule_hop(work, databases, timing, max_concurrent, total)
    return total


def reactions(events: Iterable[JournalEvent], timing: Timing) -> dict[str, float]:
    """How long (ms, median) the operator took to act once a dependency was met, per kind of edge."""
    events = sorted(events, key=lambda e: e.seq)
    edges: dict[str, list[float]] = {}

    def add(edge: str, seconds: float) -> None:
        edges.setdefault(edge, []).append(max(seconds, 0.0) * 1000)

    installed: dict[str, float] = {}
    migrated: dict[str, float] = {}
    last_out = None
    for e in events:
        if e.outcome != "ok":
            continue
        if e.op == "rotation" and e.detail.get("inRotation") is False and e.detail.get("changed"):
            last_out = e.ts
        elif e.op == "install" and not e.detail.get("noop"):
            if e.database in migrated:
                add("schema-migrated->install", e.ts - migrated.pop(e.database))
            elif last_out is not None:
                add("out-of-rotation->first-install", e.ts - last_out)
                last_out = None
        elif e.op == "install-complete" and e.server:
            installed[e.server] = e.ts
        elif e.op == "schema-migrate" and e.server in installed:
            add("installed->schema-migrate", e.ts - installed[e.server])
        elif e.op == "schema-migrated" and e.database:
            migrated[e.database] = e.ts
        elif e.op == "rotation" and e.detail.get("inRotation") and e.detail.get("changed") and installed:
            add("settled->into-rotation", e.ts - (max(installed.values()) + timing.settle))
            installed.clear()
    return {edge: round(statistics.median(values), 1) for edge, values in sorted(edges.items())}
