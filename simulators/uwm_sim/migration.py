"""Schema upgrades started from the Server Configuration Portal (UPDATE SELECTED / UPDATE ALL).

Why its own module: this is the guide's "the first server to be upgraded also upgrades the database":
the server takes the database's schema lock (every other server of that database is then locked
out), applies one catalog release at a time, and releases the lock; the portal status goes
Upgrading -> Upgrade Successful (or Failed). A migration cut short by a process restart resumes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import store, uwmdb
from .estate import RULE_LOCKED, DatabaseState, Refusal, check_migration, updates_required
from .journal import FAILED, OK
from .service import Outcome, ServerRuntime, Snapshot

IDLE, UPGRADING, SUCCESS, FAILED_STATUS = "Idle", "Upgrading", "Upgrade Successful", "Failed"


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
    outcome, plan = await asyncio.to_thread(rt.locked_tx, lambda cur, db: _start(rt, cur, db))
    if plan is not None:
        rt.spawn(run(rt, *plan))
    return outcome


def _start(rt: ServerRuntime, cur: Any, db: DatabaseState) -> tuple[Outcome, tuple[str, tuple[str, ...], bool] | None]:
    me = rt.me(cur)
    same_db = store.list_servers(cur, database=me.database)
    groups = sorted({s.repl_group for s in same_db if s.replicated and s.repl_group})
    replicated = [m for g in groups for m in store.list_servers(cur, group=g)]
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
        fault, dumped = rt.take_fault("migration-fail")
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


async def run(rt: ServerRuntime, from_version: str, steps: tuple[str, ...], fail: bool) -> None:
    fail_at = len(steps) // 2 if fail else None
    applied: list[str] = []
    for i, version in enumerate(steps):
        await asyncio.sleep(rt.timing.migration_step_seconds)
        if i == fail_at:
            await asyncio.to_thread(_fail, rt, from_version, steps, applied)
            return
        await asyncio.to_thread(_step, rt, version)
        applied.append(version)
    await asyncio.to_thread(_finish, rt, from_version, steps[-1] if steps else from_version)


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
    """After a restart: finish a migration this server had started (it still holds the lock)."""
    if snap.db.lock_holder != rt.name or snap.db.schema_version is None:
        return
    steps = rt.estate.catalog.steps(snap.db.schema_version, snap.me.version)
    rt.spawn(run(rt, (snap.portal or {}).get("from_version") or snap.db.schema_version, steps, False))
