"""A 200-server fleet in one process starts in reasonable time and every server answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from uwm_sim.fleet import running_fleet

from sim_helpers import big_fleet

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


async def test_two_hundred_servers(make_db: Callable[[], str]) -> None:
    cfg = big_fleet(make_db(), make_db(), make_db(), servers=200)
    began = time.monotonic()
    async with running_fleet(cfg) as fleet:
        started = time.monotonic() - began
        assert len(fleet.servers) == 200 and len(fleet.load_balancers) == 10
        assert started < 30, f"200 servers took {started:.1f} s to start"
        sem = asyncio.Semaphore(20)
        async with aiohttp.ClientSession() as s:
            async def status(url: str) -> int:
                async with sem, s.get(url) as r:
                    return r.status
            codes = await asyncio.gather(*(status(e.status_url) for e in fleet.servers.values()))
            assert codes == [200] * 200
            async with s.get(fleet.load_balancers["pool-3"] + "/ManagementServer/deployment/status.aspx") as r:
                assert r.status == 200 and r.headers["X-Uwm-Lb-Member"].startswith("ms-03")
        async with fleet.client("ps-042") as c:
            state = (await c.state()).body
            assert state["replication"]["group"] == "g8" and state["replication"]["role"] == "Subscriber"
            assert (await c.install("2022.1")).rule == "replication-enabled"
        events = await fleet.journal()
        assert sum(1 for e in events if e.op == "start") == 200
    print(f"200 servers started in {started:.2f} s")
