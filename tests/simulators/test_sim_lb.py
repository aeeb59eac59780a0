"""The load-balancer front: forwards only to servers in rotation, round-robin; 503 when none is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from uwm_sim.client import AgentClient
from uwm_sim.fleet import running_fleet
from uwm_sim.guards import LB_SIGNATURE_HEADER, lb_signature
from uwm_sim.journal import violations

from sim_helpers import query, wait_for

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
    cfg = estate()
    async with running_fleet(cfg) as fleet, fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        await c2.rotation(False)
        await c1.fault("slow", count=1, delay_ms=3000)
        lb = fleet.load_balancers["ms-pool"]

        async def through_lb() -> int:
            async with aiohttp.ClientSession() as s, s.get(lb + STATUS) as r:
                return r.status
        pending = asyncio.ensure_future(through_lb())
        # The forwarded request has taken the slow fault (seen in the state database, which reading does
        # not consume): it is now being answered slowly, and counted as active.
        await wait_for(lambda: asyncio.to_thread(query, cfg["stateDatabase"]["odbc"],
                                                 "SELECT faults FROM sim_server WHERE name = 'ms-1'"),
                       lambda rows: rows == [("[]",)])
        state = (await c1.state()).body
        assert state["rotation"]["activeRequests"] == 1
        assert await pending == 200
        assert (await c1.state()).body["rotation"]["activeRequests"] == 0


async def test_traffic_to_a_server_out_of_rotation_is_journalled(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-1") as c:
        # What the front sends (its pool's name, signed with the fleet's token) reaching ms-1, out of rotation.
        signed = {"X-Uwm-Lb": "rogue-pool", LB_SIGNATURE_HEADER: lb_signature(fleet.token, "rogue-pool")}
        reply = await c.request("GET", STATUS, auth=False, headers=signed)
        assert reply.status == 200
        found = violations(await fleet.journal())
        assert len(found) == 1 and "out of rotation" in found[0]
        assert (await c.state()).body["rotation"]["lbRequests"] == 1


async def test_a_forged_load_balancer_header_counts_as_nothing(small: Callable[..., dict[str, Any]]) -> None:
    """The security issue: anyone could forge `traffic-out-of-rotation` entries with a bare header."""
    async with running_fleet(small()) as fleet, fleet.client("ms-1") as c:
        for forged in ({"X-Uwm-Lb": "rogue-pool"}, {"X-Uwm-Lb": "rogue-pool", LB_SIGNATURE_HEADER: "0" * 64},
                       {"X-Uwm-Lb": "rogue-pool", LB_SIGNATURE_HEADER: lb_signature("another-token", "rogue-pool")}):
            assert (await c.request("GET", STATUS, auth=False, headers=forged)).status == 200
        assert violations(await fleet.journal()) == []
        assert (await c.state()).body["rotation"]["lbRequests"] == 0
