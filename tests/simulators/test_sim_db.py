"""The database layer: schema creation and seeding, redacted errors, restarts, reset, fleet changes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyodbc
import pytest

from uwm_sim import uwmdb
from uwm_sim.db import Database, DatabaseError, redact
from uwm_sim.dialect import detect
from uwm_sim.fleet import FleetError, running_fleet

from sim_helpers import checksum, query, wait_for

pytest_plugins = ["sim_fixtures"]


def test_redact() -> None:
    text = "login failed: DRIVER={x};SERVER=h;UID=sa;PWD={p;w};Password=abc;AccessToken=t"
    out = redact(text, "SERVER=h")
    assert "p;w" not in out and "abc" not in out and "=t" not in out and "sa;" not in out
    assert "SERVER=h" not in out


def test_errors_never_carry_the_connection_string(odbc: str) -> None:
    wrong = re.sub(r"PWD=[^;]*", "PWD=Not-The-Password-42", odbc)
    wrong = re.sub(r"PORT=\d+", "PORT=1", wrong)
    db = Database("mgmt-db", wrong, detect(wrong))
    with pytest.raises(DatabaseError) as info:
        db.call_sync(lambda c: c.execute("SELECT 1").fetchone())
    message = str(info.value)
    assert message.startswith("database mgmt-db:")
    assert "Not-The-Password-42" not in message and wrong not in message
    bad_sql = Database("mgmt-db", odbc, detect(odbc))
    with pytest.raises(DatabaseError, match="database mgmt-db:"):
        bad_sql.call_sync(lambda c: c.execute("SELECT * FROM no_such_table"))
    bad_sql.close()


def test_every_cursor_of_a_unit_of_work_is_closed_when_it_ends(odbc: str) -> None:
    # A cursor left open outlives its unit of work (a local, a traceback) and was freed later, while
    # another thread used or closed its pooled connection: the fleet died of SIGSEGV in unixODBC when
    # PostgreSQL restarted under load. Each is closed before its connection goes back or is closed.
    db = Database("mgmt-db", odbc, detect(odbc))
    kept: list[Any] = []

    def opens_two(conn: Any) -> int:
        kept.extend((conn.cursor(), conn.execute("SELECT 1")))
        return int(kept[-1].fetchone()[0])

    def fails(conn: Any) -> None:
        kept.append(conn.cursor())
        kept[-1].execute("SELECT * FROM no_such_table")

    assert db.call_sync(opens_two) == 1
    with pytest.raises(DatabaseError):
        db.call_sync(fails)
    assert len(kept) == 3
    for cur in kept:
        with pytest.raises(pyodbc.ProgrammingError, match="closed cursor"):
            cur.execute("SELECT 1")
    assert db.call_sync(lambda c: c.execute("SELECT 2").fetchone()[0]) == 2  # the pooled connection still serves
    db.close()


def test_uwm_schema_is_created_once_and_seeded(new_database: str) -> None:
    d = detect(new_database)
    db = Database("pers-db", new_database, d)
    db.call_sync(lambda c: uwmdb.ensure_schema(c, d, "2021.1", 1234))
    first = checksum(new_database)
    assert first[0] == 1234
    db.call_sync(lambda c: uwmdb.apply_step(c, "2022.1", "ps-1"))
    db.call_sync(lambda c: uwmdb.ensure_schema(c, d, "2021.1", 99))  # an existing database keeps its state
    assert checksum(new_database) == first
    assert query(new_database, "SELECT schema_version FROM uwm_schema_info") == [("2022.1",)]
    assert db.call_sync(uwmdb.migrations) == [("2021.1", "initial-install"), ("2022.1", "ps-1")]
    assert db.call_sync(lambda c: uwmdb.try_lock(c, "ps-1")) is True
    assert db.call_sync(lambda c: uwmdb.try_lock(c, "ps-2")) is False
    assert db.call_sync(lambda c: uwmdb.release_lock(c, "ps-2")) is False
    assert db.call_sync(lambda c: uwmdb.snapshot(c, "pers-db")).lock_holder == "ps-1"
    assert db.call_sync(lambda c: uwmdb.release_lock(c, "ps-1")) is True
    db.call_sync(lambda c: c.execute("CREATE TABLE uwm_backup_x_uwm_user_data (id INT)"))
    db.call_sync(lambda c: uwmdb.ensure_schema(c, d, "2023.1", 5, reset=True))
    assert checksum(new_database)[0] == 5
    assert query(new_database, "SELECT schema_version FROM uwm_schema_info") == [("2023.1",)]
    assert query(new_database, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name LIKE 'uwm_backup%'") \
        == [(0,)]
    db.close()


@pytest.mark.integration
async def test_restart_keeps_state_reset_clears_it(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        await c.install("2022.1")
        await c.fault("slow", count=5, delay_ms=1)
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        # The install may still be in flight when the first fleet stops: the restarted one finishes it.
        reply = await wait_for(c.state, lambda r: r.body["version"] == "2022.1")
        assert reply.body["faults"][0]["kind"] == "slow"
    async with running_fleet(cfg, reset=True) as fleet, fleet.client("ms-2") as c:
        state = (await c.state()).body
        assert state["version"] == "2021.1" and state["faults"] == []
        assert [e.op for e in await fleet.journal()][:2] == ["register", "register"]


@pytest.mark.integration
async def test_servers_that_left_the_file_are_unregistered(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    async with running_fleet(cfg):
        pass
    cfg["servers"] = cfg["servers"][1:]
    async with running_fleet(cfg) as fleet:
        events = await fleet.journal()
        assert ("ms-1", "unregister") in [(e.server, e.op) for e in events]
        assert query(cfg["stateDatabase"]["odbc"], "SELECT name FROM sim_server") == [("ms-2",)]


@pytest.mark.integration
async def test_unreachable_state_database_fails_cleanly(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    cfg["stateDatabase"]["odbc"] = re.sub(r"PORT=\d+", "PORT=1", cfg["stateDatabase"]["odbc"])
    with pytest.raises(DatabaseError) as info:
        async with running_fleet(cfg):
            pass
    assert "database state:" in str(info.value) and "PWD" not in str(info.value)


@pytest.mark.integration
async def test_port_in_use_names_the_server(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    async with running_fleet(cfg) as first:
        port = int(first.servers["ms-2"].url.rsplit(":", 1)[1])
        other = small()
        other["servers"][1]["port"] = port
        with pytest.raises(FleetError, match=f"server ms-2: cannot listen on 127.0.0.1:{port}"):
            async with running_fleet(other):
                pass
