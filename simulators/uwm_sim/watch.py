"""The long-polled agent state: `GET /agent/v1/state?waitForChange=SECONDS&since=VERSION`.

Why: an operator that polls every server's state every second spends most of its time (and the servers'
time) learning that nothing changed, and still reacts up to a second late. Instead every state answer
carries `stateVersion`, a digest of what the state says (not of the words of its message, nor of counters
that only grow), and a client that already has version V may ask to be answered only once the state is
no longer V, or after SECONDS at the latest.

What wakes a waiting request, cheaply enough for hundreds of servers in one process:
- a committed journal entry that may have changed this server's state (`Changes.committed`, called by
  the state database after each commit with the entries the transaction appended): one of its own
  operations; an operation on its database's schema (a migration's lock and steps, CLOSE); for a
  subscriber, an operation of its replication group's master (the master's release and replication decide
  its catch-up; a fellow subscriber's changes never change its state, and waking every member of a group
  of 200 for each of them, each reading the group again, was quadratic); anything about the client
  configuration or the whole estate;
- the next moment at which time alone changes the state: its settle delay ends, a subscriber catches up,
  an install is due to complete;
- a slow re-check (`RECHECK_SECONDS`), for changes made outside this process (another fleet process, a
  database restored by the operator), and the client's own deadline.

A waiting request looks on threads of its own (`RECHECK_THREADS`), never on those the requests use: one
change can wake hundreds (a master's install wakes its group's subscribers, a schema step every server of
the database), and their looks queued on the default threads held up every request behind them, the
operator's included (a 200-server fleet answered a portal read in 0.6 s). The looks that one change woke
are read together (`Looks`: the rows in one statement, each database and each group's master once).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import ServerRuntime, Snapshot

MAX_WAIT_SECONDS = 60
RECHECK_THREADS = 4
RECHECK_SECONDS = 5.0
# Operations that change the state of every server of the database they name (its schema and its lock).
DATABASE_OPS = frozenset({"schema-migrate", "schema-step", "schema-migrated", "schema-interrupted", "schema-resumed",
                          "schema-lock-released", "portal-close", "restore"})
# Operations of a replication group's master that change the state of the group's subscribers.
GROUP_OPS = frozenset({"replication", "install", "install-complete", "start", "restart", "register", "crash"})


def state_version(state: dict[str, Any]) -> str:
    """What a state says, as a short digest: its sentence (`message`, which counts down while a server
    settles) and the load balancer's request counter are left out, and active requests count only as
    "some" or "none" (a pool being drained is waited for; the traffic of one in rotation is not news)."""
    kept = {k: v for k, v in state.items() if k not in ("message", "stateVersion")}
    rotation = dict(kept.get("rotation") or {})
    rotation.pop("lbRequests", None)
    rotation["activeRequests"] = bool(rotation.get("activeRequests"))
    kept["rotation"] = rotation
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(eq=False)
class _Waiter:
    server: str
    database: str
    masters: frozenset[str]  # for a subscriber, its group's master(s); else empty
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def affected_by(self, entry: Any) -> bool:
        server, op = getattr(entry, "server", None), getattr(entry, "op", "")
        if server is None or server == self.server or op.startswith(("clients", "server-", "policy", "dns",
                                                                        "failover", "agent-", "virtual-host",
                                                                        "default-website", "host-header")):
            return True
        if op in DATABASE_OPS and getattr(entry, "database", None) == self.database:
            return True
        return op in GROUP_OPS and server in self.masters


class Looks:
    """The looks of waiting requests, gathered while the event loop runs what woke them and read together
    (`service.snapshots_together`) on the re-check threads; `on_request_threads`: those of the requests that
    look at once (every answer after a change, the status pages), read together on the requests' threads."""

    def __init__(self, *, on_request_threads: bool = False) -> None:
        self._on_request_threads = on_request_threads
        self._asked: dict[str, tuple[ServerRuntime, list[asyncio.Future[Snapshot]]]] = {}
        self._reads: set[asyncio.Task[None]] = set()

    async def look(self, rt: ServerRuntime) -> Snapshot:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Snapshot] = loop.create_future()
        if not self._asked:
            loop.call_soon(self._read_asked)  # after every request woken with this one has asked
        self._asked.setdefault(rt.name, (rt, []))[1].append(future)
        return await future

    def _read_asked(self) -> None:
        asked, self._asked = self._asked, {}
        task = asyncio.get_running_loop().create_task(self._read(asked))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self, asked: dict[str, tuple[ServerRuntime, list[asyncio.Future[Snapshot]]]]) -> None:
        from .service import snapshots_together

        runtimes = [rt for rt, _ in asked.values()]
        try:
            found: dict[str, Snapshot | Exception] = await asyncio.get_running_loop().run_in_executor(
                None if self._on_request_threads else rechecks(), snapshots_together, runtimes)
        except Exception as exc:  # each look raises what its own read would have
            found = {name: exc for name in asked}
        for name, (_, futures) in asked.items():
            result = found[name]
            for future in futures:
                if future.done():  # its request went away meanwhile
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


class Changes:
    """Who waits for which server's state in this process; woken from any thread after a commit."""

    def __init__(self) -> None:
        self._waiters: set[_Waiter] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.looks = Looks()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def committed(self, entries: Iterable[Any]) -> None:
        """The journal entries a transaction appended, once it committed (any thread)."""
        found = list(entries)
        loop = self._loop
        if not found or loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(self._wake, found)

    def _wake(self, entries: list[Any]) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            if any(waiter.affected_by(e) for e in entries):
                waiter.event.set()

    def waiting_for(self, server: str) -> int:
        """How many requests wait for a change of `server`'s state."""
        with self._lock:
            return sum(1 for w in self._waiters if w.server == server)

    @contextmanager
    def waiting(self, server: str, database: str, masters: Iterable[str]) -> Iterator[asyncio.Event]:
        waiter = _Waiter(server, database, frozenset(masters))
        with self._lock:
            self._waiters.add(waiter)
        try:
            yield waiter.event
        finally:
            with self._lock:
                self._waiters.discard(waiter)


def next_moment(rt: ServerRuntime, snap: Snapshot) -> float | None:
    """The next time (epoch seconds) at which time alone may change this server's state, if any."""
    me, now = snap.me, snap.now
    timing = rt.timing
    moments = [me.started_at + timing.settle_seconds]
    if me.installing and me.install_started is not None:
        moments.append(me.install_started + me.install_seconds)
    for member in (me, *snap.masters):
        moments.append(member.repl_changed_at + timing.caught_up_seconds)
    later = [m for m in moments if m > now]
    return min(later) if later else None


def masters_of(rt: ServerRuntime) -> tuple[str, ...]:
    """For a subscriber, the master(s) of its replication group, as the fleet file names them (roles never
    change at run time); for any other server, none: no other server's change changes its state."""
    me = rt.cfg
    if me.replication_role != "Subscriber":
        return ()
    return tuple(s.name for s in rt.estate.config.servers
                 if s.replication_role == "Master" and s.replication_group == me.replication_group)


@cache
def rechecks() -> ThreadPoolExecutor:
    """The threads waiting requests look on (one set per process, made when first needed)."""
    return ThreadPoolExecutor(RECHECK_THREADS, thread_name_prefix="uwm-sim-recheck")


async def state_after(rt: ServerRuntime, since: str | None, seconds: float) -> dict[str, Any]:
    """The state once its version is no longer `since`, or after `seconds` (then maybe unchanged)."""
    deadline = time.monotonic() + seconds
    changes = rt.estate.changes
    if changes is None:
        return await rt.state()
    with changes.waiting(rt.name, rt.cfg.database, masters_of(rt)) as event:
        while True:
            event.clear()  # before looking: a change committed from here on wakes the wait below
            snap = await changes.looks.look(rt)
            state = rt.state_json(snap)
            left = deadline - time.monotonic()
            if state["stateVersion"] != since or left <= 0:
                return state
            wait = min(left, RECHECK_SECONDS)
            moment = next_moment(rt, snap)
            if moment is not None:
                wait = min(wait, max(moment - time.time(), 0.0) + 0.005)
            with suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
