"""Schema upgrades started from the Server Configuration Portal (UPDATE SELECTED / UPDATE ALL).

Why its own module: this is the guide's "the first server to be upgraded also upgrades the database":
the server takes the database's schema lock (every other server of that database is then locked
out), applies one catalog release at a time, and releases the lock; the portal status goes
Upgrading -> Upgrade Successful (or Failed). A migration cut short by a process restart resumes. One
interrupted by the database (its connection lost) retries with a bounded backoff while the database is
unreachable and resumes; past `migrationRetrySeconds` of one outage it ends `Failed` ("interrupted")
and the lock is released as soon as the database answers again. The task that holds the lock never
dies silently: anything unexpected ends the migration `Failed` too, and a restarted process resumes
its migration, or only releases the lock of one that already ended `Failed`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from . import store, uwmdb
from .db import DatabaseError
from .estate import RULE_LOCKED, DatabaseState, Refusal, check_migration, updates_required
from .journal import FAILED, OK
from .service import Outcome, ServerRuntime, Snapshot

T = TypeVar("T")
log = logging.getLogger("uwm_sim")
IDLE, UPGRADING, SUCCESS, FAILED_STATUS = "Idle", "Upgrading", "Upgrade Successful", "Failed"
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 5.0


def portal_status(rt: ServerRuntime, snap: Snapshot) -> dict[str, Any]:
    me, db = snap.me, snap.db
    required = []
    if updates_required(me, db, rt.estate.catalog):
        required.append({"database": db.name, "from": db.schema_version, "to": me.version})
    p = snap.portal or {}
    return {"server": me.name, "databases": [db.name], "updatesRequired": required,
            "status": p.get("status") or IDLE, "by": p.get("by_server"), "from": p.get("from_version"),
            "to": p.get("to_version"), "error": p.get("error"), "schemaVersion": db.schema_version,
            "lockHolder": db.lock_holder}


async def start(rt: ServerRuntime, selected: list[str] | None) -> Outcome:
    """Start the schema upgrade of the selected databases (None = all that need it)."""
    if selected is not None:
        if not selected:
            return Outcome(400, {"error": "databases: select at least one database"})
        unknown = [d for d in selected if d != rt.cfg.database]
        if unknown:
            return Outcome(400, {"error": f"databases: {unknown[0]!r} is not a database of {rt.name} "
                                          f"(it uses {rt.cfg.database!r})"})
    try:
        outcome, plan = await asyncio.to_thread(rt.locked_tx, lambda cur, db: _start(rt, cur, db))
    except DatabaseError:
        # The lock (in the UWM database) may be taken while its record in the state database was lost
        # with the connection: once the databases answer, settle which it was.
        rt.spawn(_settle_start(rt))
        raise
    if plan is not None:
        rt.spawn(run(rt, *plan))
    return outcome


async def _settle_start(rt: ServerRuntime) -> None:
    """After a start that failed on the database: a lock this server holds with no migration recorded
    as started by it (the portal neither Upgrading nor Failed by it) is let go, since no task would ever
    release it; one whose record was committed after all (only the answer was lost) is resumed."""
    outage = _Outage()
    snap = await _retrying(rt, outage, rt.cfg.database, rt.snapshot_sync, None)
    if snap.db.lock_holder != rt.name:
        return
    portal = snap.portal or {}
    if portal.get("status") in (UPGRADING, FAILED_STATUS) and portal.get("by_server") == rt.name:
        await resume(rt, snap)
        return
    await _retrying(rt, outage, rt.cfg.database, lambda: release(rt), None)


def _start(rt: ServerRuntime, cur: Any, db: DatabaseState) -> tuple[Outcome, tuple[str, tuple[str, ...], bool] | None]:
    me = rt.me(cur)
    same_db, replicated = rt.database_peers(cur, me)
    try:
        steps = check_migration(me, db, rt.estate.catalog, same_db, replicated)
    except Refusal as r:
        return rt.refused(cur, "schema-migrate", r), None
    with rt.uwm.transaction() as conn:
        locked = uwmdb.try_lock(conn, me.name)
    if not locked:
        refusal = Refusal(RULE_LOCKED, f"database {db.name} was just locked by another server")
        return rt.refused(cur, "schema-migrate", refusal), None
    try:
        fault, dumped = rt.take_fault("migration-fail", cur)
        store.update_server(cur, rt.name, faults=dumped)
        store.set_portal(cur, db.name, UPGRADING, time.time(), db.schema_version, me.version, me.name)
        rt.journal(cur, "schema-migrate", OK, steps=list(steps), lockHolder=me.name,
                   fault="migration-fail" if fault else None, **{"from": db.schema_version, "to": me.version})
    except BaseException:
        with rt.uwm.transaction() as conn:
            uwmdb.release_lock(conn, me.name)
        raise
    assert db.schema_version is not None
    body = {"accepted": True, "database": db.name, "from": db.schema_version, "to": me.version,
            "status": UPGRADING}
    return Outcome(202, body), (db.schema_version, steps, fault is not None)


class MigrationInterruptedError(RuntimeError):
    """The database stayed unreachable for longer than `migrationRetrySeconds`."""


@dataclass
class _Outage:
    """The current database outage of one migration: when it began (monotonic), how long to wait next."""

    since: float | None = None
    delay: float = RETRY_FIRST_SECONDS


async def _retrying(rt: ServerRuntime, outage: _Outage, at: str, fn: Callable[[], T],
                    deadline: float | None) -> T:
    """Run `fn` in a thread until it gets through to the databases; a bounded backoff between attempts.
    Past `deadline` seconds of one outage raises `MigrationInterruptedError`; without a deadline (ending a
    migration that is over) it retries until the database answers, and journals no interruption."""
    while True:
        try:
            result = await asyncio.to_thread(fn)
        except DatabaseError as exc:
            now = time.monotonic()
            if outage.since is None:
                outage.since = now
                if deadline is not None:
                    await _journal_quietly(rt, "schema-interrupted", FAILED, at=at, error=str(exc))
            if deadline is not None and now - outage.since > deadline:
                raise MigrationInterruptedError(str(exc)) from None
            await asyncio.sleep(outage.delay)
            outage.delay = min(outage.delay * 2, RETRY_MAX_SECONDS)
            continue
        if outage.since is not None and deadline is not None:
            down = round(time.monotonic() - outage.since, 3)
            await _journal_quietly(rt, "schema-resumed", OK, at=at, downSeconds=down)
            outage.since, outage.delay = None, RETRY_FIRST_SECONDS
        return result


async def _journal_quietly(rt: ServerRuntime, op: str, outcome: str, **detail: Any) -> None:
    """Journal an interruption or a resumption; the state database may be down too (then it is not)."""
    with suppress(DatabaseError):
        await rt.estate.state.call(lambda conn: rt.journal(conn.cursor(), op, outcome, **detail))


async def run(rt: ServerRuntime, from_version: str, steps: tuple[str, ...], fail: bool) -> None:
    """The migration task: it ends with the lock released (Upgrade Successful or Failed), or is
    cancelled by a stop of the process, whose next start resumes it."""
    outage = _Outage()
    at = steps[0] if steps else from_version
    try:
        await _run(rt, outage, from_version, steps, fail)
    except asyncio.CancelledError:
        raise
    except MigrationInterruptedError as exc:
        limit = rt.timing.migration_retry_seconds
        await _abandon(rt, outage, from_version, steps, f"interrupted: the connection to the database was lost "
                       f"during the schema migration and did not come back within {limit:g} s ({exc})")
    except Exception as exc:  # whatever it was, the lock must not stay with a dead task
        log.exception("%s: schema migration stopped", rt.name)
        await _abandon(rt, outage, from_version, steps, f"interrupted: the schema migration stopped at {at}: "
                       f"{type(exc).__name__}")


async def _run(rt: ServerRuntime, outage: _Outage, from_version: str, steps: tuple[str, ...], fail: bool) -> None:
    fail_at = len(steps) // 2 if fail else None
    applied: list[str] = []
    deadline = rt.timing.migration_retry_seconds
    for i, version in enumerate(steps):
        await asyncio.sleep(rt.timing.migration_step_seconds)
        if i == fail_at:
            await _retrying(rt, outage, version, lambda: _fail(rt, from_version, steps, applied), deadline)
            return
        await _retrying(rt, outage, version, functools.partial(_step, rt, version), deadline)
        applied.append(version)
    last = steps[-1] if steps else from_version
    await _retrying(rt, outage, last, lambda: _finish(rt, from_version, last), deadline)


async def _abandon(rt: ServerRuntime, outage: _Outage, from_version: str, steps: tuple[str, ...],
                   error: str) -> None:
    """End the migration `Failed` (portal and journal), then release the lock once the database answers."""
    to_version = steps[-1] if steps else from_version

    def mark(cur: Any, db: DatabaseState) -> None:
        store.set_portal(cur, rt.cfg.database, FAILED_STATUS, time.time(), from_version, to_version, rt.name,
                         error[:500])
        rt.journal(cur, "schema-migrated", FAILED, error=error, interrupted=True,
                   **{"from": from_version, "to": to_version})
    await _retrying(rt, outage, to_version, lambda: rt.locked_tx(mark), None)
    await _retrying(rt, outage, to_version, lambda: release(rt), None)


def release(rt: ServerRuntime) -> bool:
    """Release this server's schema lock (True when it held it) and journal it."""
    with rt.uwm.transaction() as conn:
        released = uwmdb.release_lock(conn, rt.name)
    if released:
        rt.estate.state.call_sync(lambda conn: rt.journal(conn.cursor(), "schema-lock-released", OK))
    return released


def _step(rt: ServerRuntime, version: str) -> None:
    with rt.uwm.transaction() as conn:
        uwmdb.apply_step(conn, version, rt.name)
    rt.estate.state.call_sync(lambda conn: rt.journal(conn.cursor(), "schema-step", OK, version=version))


def _finish(rt: ServerRuntime, from_version: str, to_version: str) -> None:
    with rt.uwm.transaction() as conn:
        uwmdb.release_lock(conn, rt.name)

    def work(cur: Any, db: DatabaseState) -> None:
        store.set_portal(cur, db.name, SUCCESS, time.time(), from_version, to_version, rt.name)
        rt.journal(cur, "schema-migrated", OK, lockHolder=None, **{"from": from_version, "to": to_version})
    rt.locked_tx(work)


def _fail(rt: ServerRuntime, from_version: str, steps: tuple[str, ...], applied: list[str]) -> None:
    failed_at = steps[len(applied)]
    with rt.uwm.transaction() as conn:
        damaged = uwmdb.damage_user_data(conn)
        uwmdb.release_lock(conn, rt.name)
    error = f"injected fault: the schema migration failed midway, at release {failed_at}"

    def work(cur: Any, db: DatabaseState) -> None:
        store.set_portal(cur, db.name, FAILED_STATUS, time.time(), from_version, steps[-1], rt.name, error)
        rt.journal(cur, "schema-migrated", FAILED, error=error, applied=applied, damagedRows=damaged,
                   **{"from": from_version, "to": steps[-1]})
    rt.locked_tx(work)


async def close(rt: ServerRuntime) -> Outcome:
    """CLOSE after the final status: back to Idle (a running upgrade is left alone)."""
    def work(cur: Any, db: DatabaseState) -> Outcome:
        portal = store.get_portal(cur, db.name)
        if portal and portal["status"] != UPGRADING:
            store.set_portal(cur, db.name, IDLE, time.time())
            rt.journal(cur, "portal-close", OK, previous=portal["status"])
        return Outcome(200)
    return await asyncio.to_thread(rt.locked_tx, work)


async def resume(rt: ServerRuntime, snap: Snapshot) -> None:
    """After a restart: finish a migration this server had started (it still holds the lock), or only
    release the lock of one that had already ended `Failed` (a failed migration is never migrated over)."""
    if snap.db.lock_holder != rt.name or snap.db.schema_version is None:
        return
    portal = snap.portal or {}
    if portal.get("status") == FAILED_STATUS and portal.get("by_server") == rt.name:
        rt.spawn(_retrying(rt, _Outage(), snap.db.schema_version, lambda: release(rt), None))
        return
    steps = rt.estate.catalog.steps(snap.db.schema_version, snap.me.version)
    rt.spawn(run(rt, portal.get("from_version") or snap.db.schema_version, steps, False))
