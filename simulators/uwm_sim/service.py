"""One simulated server at run time: reads its state, applies agent requests, runs its installer.

Why: the views stay thin. Every mutation runs in one blocking function under the estate lock
(`locked_tx`): it reads a snapshot, asks `estate` whether the guide allows it, writes the change and
the journal entry in the same transaction, or journals the refusal. Timed work (an install, a crash
and restart) runs as tasks of the process that owns the server, and resumes after a restart. Injected
faults are applied by `fault_ops`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import clients, store, uwmdb
from .clients import ClientConfig
from .config import FleetConfig, ServerConfig
from .db import Database, DatabaseError, on_rollback
from .estate import (
    Catalog,
    DatabaseState,
    Phase,
    Refusal,
    ServerState,
    caught_up,
    check_install,
    check_replication,
    check_rotation,
    compute_phase,
    updates_required,
)
from .faults import Fault, FaultSet
from .group_commit import GroupCommit
from .guards import AuthJournal
from .journal import FAILED, OK, REFUSED, Entry, append, iso
from .watch import Changes, Looks, state_version

T = TypeVar("T")
log = logging.getLogger("uwm_sim")


@dataclass
class Estate:
    """What every server of one process shares: the configuration and the database handles."""

    config: FleetConfig
    catalog: Catalog
    state: Database
    databases: dict[str, Database]
    changes: Changes | None = None  # who long-polls which server's state (`watch.py`)
    together: GroupCommit = field(default_factory=GroupCommit)  # the agent's changes (`group_commit.py`)
    # the looks of requests answered at once, read together (`watch.Looks`)
    looks: Looks = field(default_factory=lambda: Looks(on_request_threads=True))


@dataclass(frozen=True)
class Snapshot:
    me: ServerState
    db: DatabaseState
    masters: list[ServerState]  # for a subscriber, its replication group's master(s): its catch-up
    portal: dict[str, Any] | None
    now: float
    clients: ClientConfig | None = None

    @property
    def online(self) -> bool:
        """Serving clients (brought online, not taken offline); the status page answers either way."""
        return self.clients is None or self.clients.online.get(self.me.name, True)


@dataclass
class Outcome:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class SiteControl(Protocol):
    async def stop(self) -> None: ...
    async def start(self) -> None: ...


class ServerRuntime:
    def __init__(self, cfg: ServerConfig, estate: Estate) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.estate = estate
        self.uwm = estate.databases[cfg.database]
        self.timing = estate.config.timing
        self.faults = FaultSet()
        self.fault_lock = threading.Lock()
        self.url = ""
        self.active_requests = 0
        self.lb_requests = 0
        self.in_rotation = cfg.in_rotation
        self.rotation_changed_at = 0.0
        self.down = False
        self.flap_fail_next = True
        self.auth_guard = AuthJournal()
        self.pool_peers = sorted({m for lb in estate.config.load_balancers if cfg.name in lb.servers
                                  for m in lb.servers} - {cfg.name})
        self._tasks: set[asyncio.Task[Any]] = set()
        self.site: SiteControl | None = None

    # -- plumbing ------------------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed: %s", self.name, task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def db_state_sync(self, name: str | None = None) -> DatabaseState:
        """The schema version and lock of this server's database (or of database `name`)."""
        name = name or self.cfg.database
        try:
            with self.estate.databases[name].transaction() as conn:
                return uwmdb.snapshot(conn, name)
        except DatabaseError:
            return DatabaseState(name, None, None, reachable=False)

    def database_peers(self, cur: Any, me: ServerState) -> tuple[list[ServerState], list[ServerState]]:
        """The servers of `me`'s database, and the members of every replication group with one of them."""
        peers = store.list_database_peers(cur, me.database)
        same_db = [s for s in peers if s.database == me.database]
        groups = {s.repl_group for s in same_db if s.replicated and s.repl_group}
        return same_db, [s for s in peers if s.replicated and s.repl_group in groups]


    def locked_tx(self, work: Callable[[Any, DatabaseState], T]) -> T:
        """Run `work(cursor, database state)` in one state transaction holding the estate lock."""
        with self.estate.state.transaction() as conn:
            cur = conn.cursor()
            store.lock_estate(cur, self.estate.state.dialect)
            return work(cur, self.db_state_sync())

    async def change(self, work: Callable[[Any, DatabaseState], T]) -> T:
        """`locked_tx(work)`, together with the other changes asked meanwhile (`group_commit.py`); `work`
        must not touch a UWM database."""
        return await self.estate.together.run(self, work)

    def journal(self, cur: Any, op: str, outcome: str = OK, **detail: Any) -> None:
        append(cur, self.estate.state.dialect, [Entry(self.name, self.cfg.database, op, outcome, detail)])

    def refused(self, cur: Any, op: str, r: Refusal, **detail: Any) -> Outcome:
        self.journal(cur, op, REFUSED, rule=r.rule, reason=r.reason, **detail)
        return Outcome(r.status, {"error": r.reason, "rule": r.rule})

    def me(self, cur: Any) -> ServerState:
        me = store.get_server(cur, self.name)
        if me is None:
            raise self.unregistered()
        return me

    def unregistered(self) -> DatabaseError:
        return DatabaseError(f"server {self.name} is not registered in the estate state yet")

    def take_fault(self, kind: str, cur: Any = None) -> tuple[Fault | None, str]:
        """One occurrence of fault `kind` (None: none pending) and the faults left, as saved; taken within
        the transaction of `cur`, it goes back if that transaction (or its savepoint) is rolled back."""
        with self.fault_lock:
            fault, dumped = self.faults.take(kind), self.faults.dumps()
        if fault is not None and cur is not None:
            taken = fault
            on_rollback(cur, lambda: self._give_back(taken))
        return fault, dumped

    def _give_back(self, fault: Fault) -> None:
        with self.fault_lock:
            self.faults.give_back(fault)

    # -- reading -------------------------------------------------------------------------------------
    def snapshot_sync(self) -> Snapshot:
        with self.estate.state.transaction() as conn:
            cur = conn.cursor()
            looked = store.look(cur, self.name)
            if looked is None:
                raise self.unregistered()
            me, portal, doc = looked
            masters = (store.list_servers(cur, group=me.repl_group, role="Master")
                       if me.replicated and me.repl_role == "Subscriber" else [])
        return Snapshot(me, self.db_state_sync(), masters, portal, time.time(), clients.parsed(doc))

    def install_due(self, snap: Snapshot) -> bool:
        """An install is under way whose time is up: whoever looks completes it first."""
        me = snap.me
        overdue = snap.now >= (me.install_started or 0.0) + me.install_seconds
        return bool(me.installing and me.install_fault != "hang" and overdue and me.install_target)

    async def snapshot(self) -> Snapshot:
        """The server as of now (an install that is due completes first), read together with the looks of
        the other servers asked meanwhile (`watch.Looks`): the answers to a wave of 50 installs, or to the
        status pages of a pool, were each a transaction of three statements and a read of the database."""
        return await self.estate.looks.look(self)

    def snapshot_completed_sync(self) -> Snapshot:
        """`snapshot_sync`, after completing an install that is due: on one thread, in one go (the
        completion wakes the long polls of the servers it concerns, hundreds maybe: the look after it
        does not queue behind theirs)."""
        snap = self.snapshot_sync()
        if self.install_due(snap) and snap.me.install_target:
            self.complete_install_sync(snap.me.install_target)
            snap = self.snapshot_sync()
        return snap

    def phase(self, snap: Snapshot) -> Phase:
        return compute_phase(snap.me, snap.db, self.estate.catalog, snap.now, self.timing.settle_seconds)

    def reason(self, snap: Snapshot, phase: Phase) -> str:
        me, db = snap.me, snap.db
        left = max(0.0, me.started_at + self.timing.settle_seconds - snap.now)
        return {
            Phase.RUNNING: "Connection successful",
            Phase.STARTING: f"Starting: the server is starting (about {left:.0f} s left)",
            Phase.INSTALLING: f"Installing release {me.install_target}",
            Phase.MIGRATING: f"Upgrading the schema of database {db.name}",
            Phase.LOCKED_OUT: f"Locked out: database {db.name} is being upgraded by {db.lock_holder}",
            Phase.UPDATES_REQUIRED: f"Version mismatch: server {me.version}, database schema {db.schema_version} "
                                    "(Database Updates Required)",
            Phase.MISMATCH: f"Version mismatch: server {me.version}, database schema {db.schema_version}",
            Phase.FAILED: f"Failed: {me.install_error}" if me.install_error
            else f"Failed: database {db.name} is unreachable",
        }[phase]

    def state_json(self, snap: Snapshot) -> dict[str, Any]:
        me, db, now = snap.me, snap.db, snap.now
        install = {"targetVersion": me.install_target,  # all null before the first install
                   "startedAt": iso(me.install_started) if me.install_started else None,
                   "finishedAt": iso(me.install_finished) if me.install_finished else None,
                   "error": me.install_error}
        phase = self.phase(snap)
        state = {
            "name": me.name, "kind": me.kind, "version": me.version, "url": self.url or me.url,
            "phase": phase.value, "settled": now - me.started_at >= self.timing.settle_seconds,
            "message": self.reason(snap, phase), "startedAt": iso(me.started_at),
            "install": install,
            "database": {"name": db.name, "schemaVersion": db.schema_version, "lockHolder": db.lock_holder,
                         "updatesRequired": updates_required(me, db, self.estate.catalog),
                         "reachable": db.reachable},
            "replication": {"role": me.repl_role, "group": me.repl_group if me.replicated else None,
                            "enabled": me.repl_enabled,
                            "caughtUp": caught_up(me, snap.masters, now, self.timing.caught_up_seconds)},
            "rotation": {"loadBalanced": me.load_balanced, "inRotation": me.in_rotation,
                         "activeRequests": self.active_requests, "lbRequests": self.lb_requests},
            "faults": self.faults.to_json(),
            "service": {"online": snap.online,
                        "virtualHosts": list(snap.clients.virtual_hosts.get(me.name, ())) if snap.clients else []},
            "website": {"name": self.cfg.website, "default": self.cfg.website == clients.DEFAULT_WEBSITE,
                        "otherAppsInRoot": list(self.cfg.other_apps_in_root),
                        "binding": clients.website_of(snap.clients, me.name) if snap.clients else None},
        }
        state["stateVersion"] = state_version(state)
        return state

    async def state(self) -> dict[str, Any]:
        return self.state_json(await self.snapshot())

    async def with_state(self, outcome: Outcome) -> Outcome:
        if outcome.status < 300:
            outcome.body["state"] = await self.state()
        return outcome

    # -- install -------------------------------------------------------------------------------------
    async def install(self, body: Any) -> Outcome:
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version:
            return Outcome(400, {"error": "version: a release name (string) is required"})
        outcome, seconds = await self.change(self._install_work(version))
        if seconds is not None:
            self.spawn(self.finish_install_later(version, seconds))
        return await self.with_state(outcome)

    def _install_work(self, version: str) -> Callable[[Any, DatabaseState], tuple[Outcome, float | None]]:
        def work(cur: Any, db: DatabaseState) -> tuple[Outcome, float | None]:
            me = self.me(cur)
            same_db, replicated = self.database_peers(cur, me)
            # its own group is among them: a replicated server always has a group (the fleet file's
            # default), and it is a server of its own database
            group = [s for s in replicated if s.repl_group == me.repl_group] if me.replicated else []
            pool = store.list_servers(cur, names=self.pool_peers)
            try:
                go = check_install(me, version, self.estate.catalog, group, db, pool=pool, same_db=same_db,
                                   replicated=replicated)
            except Refusal as r:
                return self.refused(cur, "install", r, version=version), None
            if not go:
                self.journal(cur, "install", OK, noop=True, **{"from": me.version, "to": version})
                return Outcome(200, {"accepted": False, "noop": True}), None
            try:
                clients.check_website(me.kind, self.cfg.website, self.cfg.other_apps_in_root)
            except Refusal as r:
                return self.refused(cur, "install", r, version=version), None
            fault, dumped = self.take_fault("install-fail", cur)
            if fault is None:
                fault, dumped = self.take_fault("install-hang", cur)
            kind = {"install-fail": "fail", "install-hang": "hang"}.get(fault.kind) if fault else None
            seconds = self.timing.install_seconds
            store.update_server(cur, self.name, install_target=version, install_started=time.time(),
                                install_finished=None, install_error=None, install_fault=kind,
                                install_seconds=seconds, faults=dumped)
            self.journal(cur, "install", OK, fault=kind, jump=self.estate.catalog.jump(me.version, version),
                         **{"from": me.version, "to": version})
            return Outcome(202, {"accepted": True}), seconds
        return work

    async def finish_install_later(self, version: str, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
        await self.change(self._complete_install_work(version))

    def complete_install_sync(self, version: str) -> bool:
        """Finish the install of `version` if it is due (idempotent: safe from a task and from a reader)."""
        return self.locked_tx(self._complete_install_work(version))

    def _complete_install_work(self, version: str) -> Callable[[Any, DatabaseState], bool]:
        def work(cur: Any, db: DatabaseState) -> bool:
            me = self.me(cur)
            now = time.time()
            if not me.installing or me.install_target != version or me.install_fault == "hang":
                return False
            if now + 0.001 < (me.install_started or 0.0) + me.install_seconds:
                return False
            if me.install_fault == "fail":
                error = "injected fault: the installer failed"
                store.update_server(cur, self.name, install_finished=now, install_error=error, install_fault=None)
                self.journal(cur, "install-complete", FAILED, error=error, **{"from": me.version, "to": version})
            else:
                store.update_server(cur, self.name, version=version, install_finished=now, started_at=now,
                                    install_fault=None)
                self.journal(cur, "install-complete", OK, **{"from": me.version, "to": version})
            return True
        return work

    # -- replication and rotation -------------------------------------------------------------------
    async def set_replication(self, body: Any) -> Outcome:
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            return Outcome(400, {"error": "enabled: a boolean is required"})

        def work(cur: Any, db: DatabaseState) -> Outcome:
            me = self.me(cur)
            # the group's releases and installs decide whether replication may be enabled; disabling is
            # always allowed (to a server with a role), so it reads none of them
            group = store.group_members(cur, me.repl_group) if me.replicated and enabled else []
            databases = [db if name == db.name else self.db_state_sync(name)
                         for name in sorted({s.database for s in group} | {db.name})] if enabled else []
            try:
                check_replication(me, enabled, group, databases)
            except Refusal as r:
                return self.refused(cur, "replication", r, enabled=enabled)
            if me.repl_enabled != enabled:
                store.update_server(cur, self.name, repl_enabled=enabled, repl_changed_at=time.time())
            self.journal(cur, "replication", OK, enabled=enabled, changed=me.repl_enabled != enabled,
                         group=me.repl_group, role=me.repl_role)
            return Outcome(200)
        return await self.with_state(await self.change(work))

    async def set_rotation(self, body: Any) -> Outcome:
        wanted = body.get("inRotation") if isinstance(body, dict) else None
        if not isinstance(wanted, bool):
            return Outcome(400, {"error": "inRotation: a boolean is required"})

        def work(cur: Any, db: DatabaseState) -> Outcome:
            me = self.me(cur)
            phase = compute_phase(me, db, self.estate.catalog, time.time(), self.timing.settle_seconds)
            try:
                check_rotation(me, wanted, phase, db)
            except Refusal as r:
                return self.refused(cur, "rotation", r, inRotation=wanted)
            store.update_server(cur, self.name, in_rotation=wanted)
            self.journal(cur, "rotation", OK, inRotation=wanted, changed=me.in_rotation != wanted)
            return Outcome(200)
        outcome = await self.change(work)
        if outcome.status == 200:
            self.in_rotation, self.rotation_changed_at = wanted, time.time()
        return await self.with_state(outcome)


def snapshots_together(runtimes: list[ServerRuntime]) -> dict[str, Snapshot | Exception]:
    """`snapshot` of each of `runtimes` (servers of one estate), read together: every row and its group's
    masters in one state transaction, each database once; a server whose install is due is completed and
    looked at alone (`ServerRuntime.snapshot`). What each gets is what its own look would have read then.
    Used for the long polls one change woke (`watch.Looks`): hundreds of them, each reading the same
    database and masters on its own, were most of a wide fleet's work."""
    found: dict[str, Snapshot | Exception] = {}
    if not runtimes:
        return found
    estate = runtimes[0].estate
    with estate.state.transaction() as conn:
        cur = conn.cursor()
        looked = store.look_many(cur, sorted({rt.name for rt in runtimes}))
        groups = {me.repl_group for me, _, _ in looked.values()
                  if me.replicated and me.repl_role == "Subscriber"}
        masters = {g: store.list_servers(cur, group=g, role="Master") for g in sorted(groups, key=str)}
    databases = {name: runtimes[0].db_state_sync(name) for name in sorted({rt.cfg.database for rt in runtimes})}
    now = time.time()
    for rt in runtimes:
        seen = looked.get(rt.name)
        if seen is None:
            found[rt.name] = rt.unregistered()
            continue
        me, portal, doc = seen
        group = masters.get(me.repl_group, []) if me.replicated and me.repl_role == "Subscriber" else []
        snap = Snapshot(me, databases[rt.cfg.database], group, portal, now, clients.parsed(doc))
        if rt.install_due(snap):
            try:
                snap = rt.snapshot_completed_sync()
            except Exception as exc:  # handed to the look that asked, as its own read would raise it
                found[rt.name] = exc
                continue
        found[rt.name] = snap
    return found
