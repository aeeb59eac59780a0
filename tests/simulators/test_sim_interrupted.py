"""A schema migration interrupted by the database (the robustness issue), without stopping the shared
PostgreSQL: the UWM database's connections are terminated (`pg_terminate_backend`), or it also refuses
new ones for a while (`ALLOW_CONNECTIONS false`). The migration resumes, or past its deadline ends
`Failed` in the portal saying it was interrupted; its lock never stays with a task that no longer runs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pyodbc
import pytest

from uwm_sim.client import AgentClient
from uwm_sim.db import DatabaseError
from uwm_sim.fleet import RunningFleet, running_fleet
from uwm_sim.journal import Event

from sim_helpers import query, wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


def database_name(odbc: str) -> str:
    found = re.search(r"DATABASE=([^;]+)", odbc)
    assert found, "the test bed's connection strings name their database"
    return found.group(1)


def admin(pg_bed: Any, sql: str, *params: Any) -> None:
    conn = pyodbc.connect(pg_bed.odbc(), autocommit=True)
    try:
        conn.execute(sql, *params)
    finally:
        conn.close()


def terminate(pg_bed: Any, name: str) -> None:
    """Every connection to database `name` is cut (the UWM database only; the state database stays)."""
    admin(pg_bed, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? "
                  "AND pid <> pg_backend_pid()", name)


def refuse_connections(pg_bed: Any, name: str, refuse: bool) -> None:
    admin(pg_bed, f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if refuse else 'true'}")
    if refuse:
        terminate(pg_bed, name)


@contextmanager
def unreachable(pg_bed: Any, name: str) -> Iterator[None]:
    """Database `name` cuts its connections and refuses new ones until the block ends."""
    refuse_connections(pg_bed, name, True)
    try:
        yield
    finally:
        refuse_connections(pg_bed, name, False)


@asynccontextmanager
async def installed(cfg: dict[str, Any]) -> AsyncIterator[tuple[RunningFleet, AgentClient]]:
    """The fleet, in which ms-2 took 2023.1 and waits for its database's schema upgrade."""
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        assert (await c.install("2023.1")).status == 202
        await wait_phase(c, "DatabaseUpdatesRequired")
        yield fleet, c


@asynccontextmanager
async def migrating(cfg: dict[str, Any]) -> AsyncIterator[tuple[RunningFleet, AgentClient]]:
    """The fleet, in which ms-2 took 2023.1 and started the schema's two catalog steps (2022.1, 2023.1)."""
    async with installed(cfg) as (fleet, c):
        assert (await c.update_all()).status == 202
        yield fleet, c


def ops(events: list[Event]) -> list[str]:
    return [e.op for e in events if e.server == "ms-2"]


def lock_of(odbc: str) -> list[tuple[Any, ...]]:
    return query(odbc, "SELECT holder FROM uwm_schema_lock")


async def test_connections_cut_mid_migration_it_resumes(small: Callable[..., dict[str, Any]], pg_bed: Any) -> None:
    cfg = small(migrationStepSeconds=0.5)
    odbc = cfg["databases"][0]["odbc"]
    async with migrating(cfg) as (fleet, c):
        await wait_for(fleet.journal, lambda evs: "schema-step" in ops(evs))
        terminate(pg_bed, database_name(odbc))
        # Only the journal (the state database) is watched, so the migration is what meets the cut connection.
        await wait_for(fleet.journal, lambda evs: "schema-migrated" in ops(evs))
        assert (await c.portal()).body["status"] == "Upgrade Successful"
        assert (await wait_phase(c, "Running"))["database"]["schemaVersion"] == "2023.1"
        journal = ops(await fleet.journal())
        assert journal.index("schema-interrupted") < journal.index("schema-resumed") < journal.index("schema-migrated")
    assert lock_of(odbc) == [(None,)]
    assert query(odbc, "SELECT schema_version FROM uwm_schema_info") == [("2023.1",)]


async def test_database_away_for_a_while_it_retries_and_resumes(small: Callable[..., dict[str, Any]],
                                                                pg_bed: Any) -> None:
    cfg = small(migrationStepSeconds=0.3, migrationRetrySeconds=60)
    odbc = cfg["databases"][0]["odbc"]
    async with migrating(cfg) as (fleet, c):
        with unreachable(pg_bed, database_name(odbc)):
            events = await wait_for(fleet.journal, lambda evs: "schema-interrupted" in ops(evs))
            interrupted = next(e for e in events if e.op == "schema-interrupted")
            assert "database mgmt-db" in interrupted.detail["error"] and "PWD" not in interrupted.detail["error"]
            state = (await c.state()).body
            assert state["phase"] == "Failed" and state["database"]["reachable"] is False
            assert (await c.portal()).body["status"] == "Upgrading", "within its deadline it is still upgrading"
        await wait_portal(c, "Upgrade Successful", within=20)
        resumed = next(e for e in await fleet.journal() if e.op == "schema-resumed")
        assert resumed.detail["downSeconds"] > 0
    assert lock_of(odbc) == [(None,)]


async def test_past_its_deadline_it_ends_failed_and_lets_go_of_the_lock(small: Callable[..., dict[str, Any]],
                                                                       pg_bed: Any) -> None:
    cfg = small(migrationStepSeconds=0.2, migrationRetrySeconds=0.5)
    odbc = cfg["databases"][0]["odbc"]
    async with migrating(cfg) as (fleet, c):
        with unreachable(pg_bed, database_name(odbc)):
            portal = await wait_portal(c, "Failed", within=15)
            assert portal["error"].startswith("interrupted:") and "connection" in portal["error"]
        # Once the database answers again, the task that held the lock releases it.
        await wait_for(lambda: asyncio.to_thread(lock_of, odbc), lambda rows: rows == [(None,)])
        state = await wait_phase(c, "DatabaseUpdatesRequired")
        assert (await c.portal()).body["status"] == "Failed", "a failed migration is never migrated over by itself"
        events = await fleet.journal()
        failed = [e for e in events if e.op == "schema-migrated"]
        assert [(e.outcome, e.detail.get("interrupted")) for e in failed] == [("failed", True)]
        assert ops(events)[-1] == "schema-lock-released"
        assert state["database"]["lockHolder"] is None


async def test_a_restart_releases_the_lock_of_a_migration_that_ended_failed(
        small: Callable[..., dict[str, Any]], pg_bed: Any) -> None:
    cfg = small(migrationStepSeconds=0.2, migrationRetrySeconds=0.5)
    odbc = cfg["databases"][0]["odbc"]
    name = database_name(odbc)
    try:
        async with migrating(cfg) as (fleet, c):
            refuse_connections(pg_bed, name, True)
            await wait_portal(c, "Failed", within=15)
        # The process stopped while its database was still away: the lock is still ms-2's.
    finally:
        refuse_connections(pg_bed, name, False)
    assert lock_of(odbc) == [("ms-2",)]
    schema = query(odbc, "SELECT schema_version FROM uwm_schema_info")
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        await wait_for(lambda: asyncio.to_thread(lock_of, odbc), lambda rows: rows == [(None,)])
        assert (await c.portal()).body["status"] == "Failed"
        assert query(odbc, "SELECT schema_version FROM uwm_schema_info") == schema, "not migrated over"
        restarted = ops(await fleet.journal())
        assert restarted[-1] == "schema-lock-released" and restarted.count("schema-migrate") == 1


async def _update_all_failing(fleet: RunningFleet, c: AgentClient, committed: bool) -> None:
    """UPDATE ALL through ms-2 while the state database's transaction fails on its connection: before its
    commit (`committed` False: the record of the start lost, the lock in the UWM database taken) or after
    it (only the answer lost). Either way the caller gets a 503."""
    rt = fleet.runtimes["ms-2"]
    real = rt.locked_tx

    def failing(work: Callable[[Any, Any], Any]) -> Any:
        def then_lost(cur: Any, db: Any) -> Any:
            work(cur, db)
            raise DatabaseError("database state: [HY000] The connection has been lost")
        if committed:
            real(work)
            raise DatabaseError("database state: [HY000] The connection has been lost")
        return real(then_lost)

    rt.locked_tx = failing  # type: ignore[method-assign]
    try:
        reply = await c.update_all()
    finally:
        rt.locked_tx = real  # type: ignore[method-assign]
    assert reply.status == 503, reply.text


async def test_a_start_whose_record_was_lost_lets_go_of_the_lock(small: Callable[..., dict[str, Any]]) -> None:
    """UPDATE ALL takes the schema lock (in the UWM database), then its record in the state database
    (portal Upgrading, the journal) is lost with its connection: the campaign saw PostgreSQL restart at
    that instant, a 503 answered, and the lock held for ever by a migration that never ran, so the plan
    waited until its deadline. Once the database answers, the server lets go of the lock; asked again,
    it migrates."""
    cfg = small(migrationStepSeconds=0.2)
    odbc = cfg["databases"][0]["odbc"]
    async with installed(cfg) as (fleet, c):
        await _update_all_failing(fleet, c, committed=False)
        await wait_for(lambda: asyncio.to_thread(lock_of, odbc), lambda rows: rows == [(None,)])
        assert (await c.portal()).body["status"] == "Idle"
        assert "schema-migrate" not in ops(await fleet.journal())
        assert (await c.update_all()).status == 202
        await wait_portal(c, "Upgrade Successful", within=20)
    assert query(odbc, "SELECT schema_version FROM uwm_schema_info") == [("2023.1",)]


async def test_a_start_whose_answer_was_lost_migrates(small: Callable[..., dict[str, Any]]) -> None:
    """The start was recorded (portal Upgrading, journalled) and only its answer lost: the migration runs."""
    cfg = small(migrationStepSeconds=0.2)
    odbc = cfg["databases"][0]["odbc"]
    async with installed(cfg) as (fleet, c):
        await _update_all_failing(fleet, c, committed=True)
        await wait_portal(c, "Upgrade Successful", within=20)
        assert ops(await fleet.journal()).count("schema-migrate") == 1
    assert lock_of(odbc) == [(None,)]
    assert query(odbc, "SELECT schema_version FROM uwm_schema_info") == [("2023.1",)]
