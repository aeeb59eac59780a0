"""The simulator's own security (the security issue): the token is checked before any fault or traffic
accounting, hostile JSON gets a 400, and rejected calls are journalled at a bounded rate."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from uwm_sim.client import AgentClient
from uwm_sim.fleet import running_fleet

from sim_helpers import query, wait_for

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration
DEEP = b"[" * 100_000 + b"]" * 100_000
JSON_PATHS = ("/agent/v1/install", "/agent/v1/replication", "/agent/v1/rotation", "/agent/v1/faults",
              "/agent/v1/clients", "/agent/v1/service")


def pending_faults(cfg: dict[str, Any], server: str) -> list[dict[str, Any]]:
    (row,) = query(cfg["stateDatabase"]["odbc"], "SELECT faults FROM sim_server WHERE name = ?", server)
    return list(json.loads(row[0]))


async def test_a_rejected_call_consumes_no_fault_and_is_no_traffic(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    async with running_fleet(cfg) as fleet, fleet.client("ms-1") as c, AgentClient(fleet.servers["ms-1"].url,
                                                                                     "wrong-token-value") as bad:
        assert (await c.fault("slow", count=1, delay_ms=5000)).status == 200
        # ms-1 is out of rotation: a (forged) load-balancer header would be journalled as a broken rule.
        reply = await bad.request("GET", "/agent/v1/state", headers={"X-Uwm-Lb": "ms-pool"})
        assert reply.status == 401
        assert [f["kind"] for f in pending_faults(cfg, "ms-1")] == ["slow"]
        assert (await c.clear_faults()).status == 200
        assert (await c.request("POST", "/agent/v1/faults", {"kind": "http-500"})).status == 200
        assert (await bad.state()).status == 401
        assert [f["kind"] for f in pending_faults(cfg, "ms-1")] == ["http-500"]
        events = await fleet.journal()
        assert not [e for e in events if e.op in ("traffic-out-of-rotation", "fault-hit")]
        assert (await c.state()).status == 500, "the fault is still there for the real client"


async def test_deeply_nested_json_is_a_bad_request(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, aiohttp.ClientSession() as s:
        base = fleet.servers["ms-2"].url
        auth = {"Authorization": f"Bearer {fleet.token}", "Content-Type": "application/json"}
        forty = json.dumps({"version": json.loads("[" * 40 + "]" * 40)}).encode()
        for path in (*JSON_PATHS, "/ServerConfigurationPortal/DatabaseUpdates/UpdateSelected"):
            for body in (DEEP, forty):
                async with s.post(base + path, data=body, headers=auth) as r:
                    answer = await r.json()
                    assert r.status == 400 and answer["error"].startswith("body: JSON nested deeper"), (path, answer)
        async with AgentClient(base, fleet.token) as c:
            assert (await c.state()).status == 200


async def test_rejected_calls_are_journalled_at_a_bounded_rate(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, AgentClient(fleet.servers["ms-2"].url, None) as anonymous:
        for _ in range(3):  # three bursts of 40
            replies = await asyncio.gather(*(anonymous.state() for _ in range(40)))
            assert {r.status for r in replies} == {401}

        def auth_entries(events: list[Any]) -> list[Any]:
            return [e for e in events if e.op == "auth"]
        events = await wait_for(fleet.journal, lambda evs: sum(e.detail["count"] for e in auth_entries(evs)) == 120)
        entries = auth_entries(events)
        assert all(e.server == "ms-2" and e.outcome == "refused" and e.detail["path"] == "/agent/v1/state"
                   for e in entries)
        assert len(entries) < 10
        gaps = [b.ts - a.ts for a, b in itertools.pairwise(entries)]
        assert all(gap >= 0.95 for gap in gaps), gaps
