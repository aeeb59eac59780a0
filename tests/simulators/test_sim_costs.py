"""What one agent request costs the simulator's databases, counted at the ODBC boundary.

Why: a fleet process answers every server's state look after every change (the long polls), and takes
the estate lock for every install and replication switch; with 200 servers in one replication group a
look took 6 statements on two databases and every switch and install read the whole group (an install
three times), so the simulator, not the operator, set the pace of a wide plan. The rules must still see
everything they judge: the refusals below come from the rows these requests still read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from uwm_sim.db import Database
from uwm_sim.fleet import running_fleet

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration

SUBSCRIBERS = 12


@dataclass
class Tally:
    statements: int = 0
    rows: int = 0


class _Cursor:
    def __init__(self, real: Any, conn: _Connection, tally: Tally) -> None:
        self._real, self.connection, self._tally = real, conn, tally

    def execute(self, sql: str, *params: Any) -> _Cursor:
        self._tally.statements += 1
        self._real.execute(sql, *params)
        return self

    def fetchone(self) -> Any:
        row = self._real.fetchone()
        self._tally.rows += row is not None
        return row

    def fetchall(self) -> list[Any]:
        found = self._real.fetchall()
        self._tally.rows += len(found)
        return list(found)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Connection:
    def __init__(self, real: Any, tally: Tally) -> None:
        self._real, self._tally = real, tally

    def cursor(self) -> _Cursor:
        return _Cursor(self._real.cursor(), self, self._tally)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def counted(db: Database, monkeypatch: pytest.MonkeyPatch) -> Tally:
    """Count the statements run and rows fetched on `db` from now on (its pool hands out counting proxies)."""
    tally = Tally()
    real = db.pool.connection

    @contextmanager
    def connection() -> Iterator[Any]:
        with real() as conn:
            yield _Connection(conn, tally)

    monkeypatch.setattr(db.pool, "connection", connection)
    return tally


def one_group(make_db: Callable[[], str]) -> dict[str, Any]:
    """A master and SUBSCRIBERS subscribers in one replication group on one database, replication on."""
    servers = [{"name": f"ps-{n}", "kind": "Personalization", "database": "pers-db", "port": 0,
                "replicationRole": "Master" if n == 0 else "Subscriber", "replicationGroup": "g",
                "replicationEnabled": True} for n in range(SUBSCRIBERS + 1)]
    return {"releases": ["2021.1", "2022.1", "2023.1"], "token": "t0ken-for-tests",
            "stateDatabase": {"odbc": make_db()},
            "timing": {"settleSeconds": 0.2, "installSeconds": 0.2, "migrationStepSeconds": 0.2,
                       "caughtUpSeconds": 0.2},
            "databases": [{"name": "pers-db", "kind": "Personalization", "odbc": make_db(),
                           "schemaVersion": "2021.1", "seedRows": 5}],
            "servers": servers}


async def test_a_state_look_is_one_statement_per_database(make_db: Callable[[], str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_fleet(one_group(make_db)) as fleet:
        rt = fleet.runtimes["ps-3"]
        master = fleet.runtimes["ps-0"]
        state, uwm = counted(rt.estate.state, monkeypatch), counted(rt.uwm, monkeypatch)
        snap = await rt.snapshot()
        # the subscriber's own row with the portal and the client configuration, and its group's master
        assert (state.statements, uwm.statements) == (2, 1)
        assert snap.me.name == "ps-3" and [m.name for m in snap.masters] == ["ps-0"]
        assert snap.db.schema_version == "2021.1" and snap.db.lock_holder is None
        assert snap.clients is not None and snap.online
        before = state.statements
        await master.snapshot()  # a master has no master to read
        assert state.statements - before == 1


async def test_switching_replication_off_reads_no_group(make_db: Callable[[], str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_fleet(one_group(make_db)) as fleet, fleet.client("ps-4") as c:
        rt = fleet.runtimes["ps-4"]
        state = counted(rt.estate.state, monkeypatch)
        assert (await c.replication(False)).status == 200
        off = state.rows
        assert off < SUBSCRIBERS, f"disabling replication read {off} server rows"
        # enabling is judged on the whole group: its releases must match, none may be installing
        assert (await c.replication(True)).status == 200
        assert state.rows - off > SUBSCRIBERS


async def test_an_install_reads_its_group_once(make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_fleet(one_group(make_db)) as fleet, fleet.client("ps-0") as master:
        rt = fleet.runtimes["ps-0"]
        state = counted(rt.estate.state, monkeypatch)
        refused = await master.install("2022.1")
        # replication is still on: the group rows it read are what refuses it, naming the servers
        assert refused.rule == "replication-enabled" and "ps-12" in refused.body["error"]
        assert SUBSCRIBERS < state.rows <= SUBSCRIBERS + 4, f"a refused install read {state.rows} rows"
        for n in range(SUBSCRIBERS + 1):
            async with fleet.client(f"ps-{n}") as c:
                assert (await c.replication(False)).status == 200
        state.rows = 0
        accepted = await master.install("2022.1")
        assert accepted.status == 202, accepted.body
        assert state.rows <= 2 * (SUBSCRIBERS + 4), f"an install read {state.rows} rows"
