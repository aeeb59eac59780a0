"""The load-balancer front: forwards only to servers in rotation, round-robin; 503 when none is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from uwm_sim.client import AgentClient
from uwm_sim.fleet import running_fleet
from uwm_sim.journal import violations

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration
STATUS = "/ManagementServer/deployment/status.aspx"


async def members_hit(lb: str, n: int) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(lb + STATUS) as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Uwm-Lb"] == "ms-pool"
                out.append(r.headers["X-Uwm-Lb-Member"])
    return out


async def test_forwards_only_to_servers_in_rotation(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(estate()) as fleet, fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        lb = fleet.load_balancers["ms-pool"]
        assert sorted(await members_hit(lb, 4)) == ["ms-1", "ms-1", "ms-2", "ms-2"]
        await c1.rotation(False)
        before = (await c1.state()).body["rotation"]["lbRequests"]
        assert await members_hit(lb, 5) == ["ms-2"] * 5
        assert (await c1.state()).body["rotation"]["lbRequests"] == before
        await c2.rotation(False)
        async with aiohttp.ClientSession() as s, s.get(lb + STATUS) as r:
            assert r.status == 503 and "no server of pool ms-pool is in rotation" in await r.text()
        async with AgentClient(lb, None) as pool:
            listing = (await pool.request("GET", "/lb/v1/pool", auth=False)).body
        assert listing["name"] == "ms-pool"
        assert [(m["name"], m["inRotation"]) for m in listing["members"]] == [("ms-1", False), ("ms-2", False)]
        await c1.rotation(True)
        assert await members_hit(lb, 2) == ["ms-1", "ms-1"]
        assert violations(await fleet.journal()) == []


async def test_active_requests_are_counted(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(estate()) as fleet, fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        await c2.rotation(False)
        await c1.fault("slow", count=1, delay_ms=800)
        lb = fleet.load_balancers["ms-pool"]

        async def through_lb() -> int:
            async with aiohttp.ClientSession() as s, s.get(lb + STATUS) as r:
                return r.status
        pending = asyncio.ensure_future(through_lb())
        await asyncio.sleep(0.4)
        state = (await c1.state()).body
        assert state["rotation"]["activeRequests"] == 1
        assert await pending == 200
        assert (await c1.state()).body["rotation"]["activeRequests"] == 0


async def test_traffic_to_a_server_out_of_rotation_is_journalled(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-1") as c:
        reply = await c.request("GET", STATUS, auth=False, headers={"X-Uwm-Lb": "rogue-pool"})
        assert reply.status == 200
        found = violations(await fleet.journal())
        assert len(found) == 1 and "out of rotation" in found[0]
