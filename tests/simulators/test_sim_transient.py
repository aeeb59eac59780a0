"""Transient agent errors: `http-500` answers 500 and does nothing, `drop-connection` does it and drops the
connection unanswered; a seeded share of the calls is hit reproducibly, and every hit is journalled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from uwm_sim.client import AgentClient
from uwm_sim.fleet import running_fleet

from sim_helpers import wait_phase

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


async def inject(c: AgentClient, **fault: Any) -> None:
    reply = await c.request("POST", "/agent/v1/faults", fault)
    assert reply.status == 200, reply.text


async def test_http_500_answers_500_and_does_nothing(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        await inject(c, kind="http-500", count=3)
        assert (await c.install("2022.1")).status == 500
        # The harness's own calls are never hit: the journal, the faults.
        assert await c.journal()
        await inject(c, kind="health-flap")
        assert (await c.state()).status == 500
        assert (await c.rotation(False)).status == 500
        state = (await c.state()).body
        assert state["version"] == "2021.1" and state["install"]["targetVersion"] is None
        assert [f["kind"] for f in state["faults"]] == ["health-flap"]
        events = await fleet.journal()
        assert not [e for e in events if e.op in ("install", "rotation")], "nothing was done"
        hits = [(e.server, e.outcome, e.detail["kind"], e.detail["method"], e.detail["path"])
                for e in events if e.op == "fault-hit"]
        assert hits == [("ms-2", "failed", "http-500", "POST", "/agent/v1/install"),
                        ("ms-2", "failed", "http-500", "GET", "/agent/v1/state"),
                        ("ms-2", "failed", "http-500", "POST", "/agent/v1/rotation")]


async def test_drop_connection_takes_effect_and_answers_nothing(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        await inject(c, kind="drop-connection")
        with pytest.raises(aiohttp.ClientConnectionError):
            await c.install("2022.1")
        # The install did happen: the client only lost the answer.
        state = await wait_phase(c, "DatabaseUpdatesRequired")
        assert state["version"] == "2022.1" and state["faults"] == []
        ops = [(e.op, e.detail.get("kind")) for e in await fleet.journal() if e.server == "ms-2"]
        assert ops.index(("install", None)) < ops.index(("fault-hit", "drop-connection"))
        # A call that would have been answered with an error is dropped (and journalled) all the same.
        await inject(c, kind="drop-connection")
        with pytest.raises(aiohttp.ClientConnectionError):
            await c.request("POST", "/agent/v1/rotation", form={"not": "json"})
        hits = [e.detail["path"] for e in await fleet.journal() if e.op == "fault-hit"]
        assert hits == ["/agent/v1/install", "/agent/v1/rotation"]


async def hit_pattern(c: AgentClient, seed: int, calls: int) -> list[bool]:
    await inject(c, kind="http-500", count=1000, percent=40, seed=seed)
    pattern = [(await c.state()).status == 500 for _ in range(calls)]
    assert (await c.clear_faults()).status == 200
    return pattern


async def test_a_seeded_share_of_the_calls_is_hit_reproducibly(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        first = await hit_pattern(c, 42, 30)
        assert 0 < sum(first) < 30, first
        assert await hit_pattern(c, 42, 30) == first
        other = await hit_pattern(c, 43, 30)
        assert other != first
        hits = [e for e in await fleet.journal() if e.op == "fault-hit"]
        assert len(hits) == 2 * sum(first) + sum(other), "every hit journalled, and only hits"
