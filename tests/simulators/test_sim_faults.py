"""Injected faults: install fails or hangs, health flaps, migration dies midway, crash, slow answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from uwm_sim.fleet import running_fleet
from uwm_sim.uwmdb import DAMAGED_PREFIX

from sim_helpers import checksum, query, wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


async def test_install_fail_then_reinstall(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        assert (await c.fault("install-fail")).body["faults"] == [{"kind": "install-fail", "count": 1, "delayMs": 0}]
        assert (await c.install("2022.1")).status == 202
        state = await wait_phase(c, "Failed")
        assert state["version"] == "2021.1" and "installer failed" in state["install"]["error"]
        assert state["faults"] == []
        page = await c.status_page("Management")
        assert page.status == 503 and "Failed" in page.text
        # A failed server is repaired by installing again (here: its current release).
        assert (await c.install("2021.1")).status == 202
        await wait_phase(c, "Running")
        events = [(e.op, e.outcome) for e in await fleet.journal() if e.server == "ms-2"]
        assert ("install-complete", "failed") in events and events[-1] == ("install-complete", "ok")


async def test_install_hang_until_faults_cleared(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(installSeconds=0.05)) as fleet, fleet.client("ms-2") as c:
        await c.fault("install-hang")
        assert (await c.install("2022.1")).status == 202
        await asyncio.sleep(0.3)
        assert (await c.state()).body["phase"] == "Installing"
        assert (await c.install("2022.1")).rule == "busy"
        assert (await c.clear_faults()).status == 200
        state = (await c.state()).body
        assert state["phase"] == "Failed" and "aborted" in state["install"]["error"]
        assert (await c.install("2022.1")).status == 202
        assert (await wait_phase(c, "DatabaseUpdatesRequired"))["version"] == "2022.1"


async def test_health_flap(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        await c.fault("health-flap", count=2)
        codes = [(await c.status_page("Management")).status for _ in range(6)]
        assert codes == [503, 200, 503, 200, 200, 200]
        assert (await c.state()).body["faults"] == []


async def test_migration_fails_midway(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    odbc = cfg["databases"][0]["odbc"]
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        before = checksum(odbc)
        await c.fault("migration-fail")
        await c.install("2023.1")
        await wait_phase(c, "DatabaseUpdatesRequired")
        assert (await c.update_all()).status == 202
        portal = await wait_portal(c, "Failed")
        assert "midway" in portal["error"] and "2023.1" in portal["error"]
        # Midway: the first of two catalog steps was applied, the data is damaged, the lock released.
        assert query(odbc, "SELECT schema_version FROM uwm_schema_info") == [("2022.1",)]
        assert query(odbc, "SELECT holder FROM uwm_schema_lock") == [(None,)]
        assert checksum(odbc) != before
        damaged = query(odbc, "SELECT COUNT(*) FROM uwm_user_data WHERE value = ?", DAMAGED_PREFIX)
        assert damaged == [(5,)]
        assert (await c.state()).body["phase"] == "DatabaseUpdatesRequired"
        failed = [e for e in await fleet.journal() if e.op == "schema-migrated"]
        assert failed[-1].outcome == "failed" and failed[-1].detail["damagedRows"] == 5
        assert failed[-1].detail["applied"] == ["2022.1"]
        # The fault is used up: a retry completes the migration.
        assert (await c.update_all()).status == 202
        await wait_portal(c, "Upgrade Successful")


async def test_crash_and_restart(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        reply = await c.fault("crash", delay_ms=1500)
        assert reply.status == 200 and reply.body["crashing"]
        url = fleet.servers["ms-2"].status_url
        assert await wait_for(lambda: _try_status(url), lambda s: s == 0, within=5) == 0, "down: no answer"
        assert await wait_for(lambda: _try_status(url), lambda s: s == 200, within=10) == 200
        ops = [e.op for e in await fleet.journal() if e.server == "ms-2"]
        assert ops[-3:] == ["fault", "crash", "restart"]


async def test_a_crashed_server_listens_again_even_if_its_restart_cannot_be_journalled(
        small: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The restart is journalled before the server listens again; a state database that fails that write
    loses the entry (as it would any), never the server: it comes back all the same."""
    import uwm_sim.fault_ops
    from uwm_sim.db import DatabaseError

    real, saves = uwm_sim.fault_ops.save, []

    async def save(rt: Any, fn: Callable[[Any], None]) -> None:
        saves.append(fn.__name__)
        if fn.__name__ == "restarted":  # the fault's and the crash's writes go through, the restart's not
            raise DatabaseError("database state: the connection was lost")
        await real(rt, fn)
    monkeypatch.setattr(uwm_sim.fault_ops, "save", save)
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        assert (await c.fault("crash", delay_ms=500)).status == 200
        url = fleet.servers["ms-2"].status_url
        assert await wait_for(lambda: _try_status(url), lambda s: s == 0, within=5) == 0, "down: no answer"
        assert await wait_for(lambda: _try_status(url), lambda s: s == 200, within=10) == 200
        assert "restarted" in saves


async def _try_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def test_slow_answers(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        await c.fault("slow", count=2, delay_ms=1000)  # a margin no loaded machine eats up
        durations = []
        for _ in range(3):
            began = time.monotonic()
            assert (await c.state()).status == 200
            durations.append(time.monotonic() - began)
        assert durations[0] >= 1.0 and durations[1] >= 1.0 and durations[2] < 1.0, durations
        assert (await c.state()).body["faults"] == []
