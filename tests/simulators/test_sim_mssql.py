"""The SQL Server side of the dialect seam, against a real SQL Server in a container where Docker exists.

Skipped (with the reason) when no Docker engine answers or no SQL Server ODBC driver is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyodbc
import pytest

from uwm_sim.fleet import running_fleet
from uwm_sim.journal import read_journal, violations

from mssql_support import sql_server
from sim_helpers import FAST, RELEASES, TOKEN, wait_phase, wait_portal

pytestmark = [pytest.mark.mssql, pytest.mark.integration]


@pytest.fixture(scope="module")
def mssql() -> Iterator[str]:
    yield from sql_server()


def _database(base: str, name: str) -> str:
    conn = pyodbc.connect(base + "DATABASE=master;", autocommit=True)
    try:
        conn.execute(f"IF DB_ID('{name}') IS NULL CREATE DATABASE {name}")
    finally:
        conn.close()
    return base + f"DATABASE={name};"


async def test_fleet_on_sql_server(mssql: str) -> None:
    cfg: dict[str, Any] = {
        "releases": RELEASES, "token": TOKEN, "timing": FAST,
        "stateDatabase": {"odbc": _database(mssql, "sim_state"), "dialect": "mssql"},
        "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": _database(mssql, "uwm_mgmt"),
                       "dialect": "mssql", "seedRows": 600}],
        "servers": [{"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0},
                    {"name": "ms-2", "kind": "Management", "database": "mgmt-db", "port": 0}],
    }
    async with running_fleet(cfg, reset=True) as fleet, fleet.client("ms-1") as c:
        assert (await c.status_page("Management")).status == 200
        assert (await c.install("2023.1")).status == 202
        await wait_phase(c, "DatabaseUpdatesRequired")
        assert (await c.update_all()).status == 202
        await wait_portal(c, "Upgrade Successful")
        async with fleet.client("ms-2") as c2:
            assert (await c2.state()).body["phase"] == "VersionMismatch"
            assert (await c2.install("2025.1")).rule == "version-jump"
    events = read_journal(cfg["stateDatabase"]["odbc"])
    assert violations(events) == [] and [e.seq for e in events] == list(range(1, len(events) + 1))
