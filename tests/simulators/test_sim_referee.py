"""The stricter referee over HTTP: each request the guide forbids is refused with its own rule id and
journalled as refused, whatever the client: the whole load-balancer pool offline before an install, the
database first, no replication while a member's database is locked, no install anywhere on a database
whose replication group replicates, and no return to rotation before the status page confirms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim.client import AgentClient, Reply
from uwm_sim.fleet import RunningFleet, running_fleet

from sim_helpers import wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration
MS_ROUTE = "/ManagementServer/api/anything"


async def assert_refused(fleet: RunningFleet, reply: Reply, server: str, op: str, rule: str) -> None:
    assert reply.status == 409, reply.text
    assert reply.rule == rule and reply.error, reply.body
    last = [e for e in await fleet.journal() if e.server == server and e.op == op][-1]
    assert (last.outcome, last.detail["rule"]) == ("refused", rule)
    assert last.detail["reason"] == reply.error


async def test_no_install_while_a_pool_peer_is_in_rotation(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(estate()) as fleet, fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        assert (await c1.rotation(False)).status == 200
        # A no-op is no install: answered before any of the rules.
        noop = await c1.install("2021.1")
        assert noop.status == 200 and noop.body["noop"]
        reply = await c1.install("2022.1")
        await assert_refused(fleet, reply, "ms-1", "install", "pool-in-rotation")
        assert "ms-2" in reply.error
        # ms-2 itself, still in rotation, keeps the rule it had.
        await assert_refused(fleet, await c2.install("2022.1"), "ms-2", "install", "in-rotation")
        assert (await c2.rotation(False)).status == 200
        assert (await c1.install("2022.1")).status == 202


async def test_the_database_first(small: Callable[..., dict[str, Any]]) -> None:
    """ms-1 and ms-2 share mgmt-db: while its schema is behind 2022.1, only one of them may take 2022.1."""
    async with running_fleet(small(installSeconds=0.3)) as fleet, fleet.client("ms-1") as c1, \
            fleet.client("ms-2") as c2:
        assert (await c2.install("2022.1")).status == 202
        await assert_refused(fleet, await c1.install("2022.1"), "ms-1", "install", "database-first")
        await wait_phase(c2, "DatabaseUpdatesRequired")
        reply = await c1.install("2022.1")
        await assert_refused(fleet, reply, "ms-1", "install", "database-first")
        assert "ms-2" in reply.error and "2022.1" in reply.error
        # Nor any other release ahead of the schema: ms-2 is the first server of mgmt-db.
        await assert_refused(fleet, await c1.install("2023.1"), "ms-1", "install", "database-first")
        assert (await c2.update_all()).status == 202
        await wait_portal(c2, "Upgrade Successful")
        assert (await c1.install("2022.1")).status == 202, "the schema is at 2022.1: every other server may follow"


async def test_a_failed_install_does_not_hold_the_release(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        await c2.fault("install-fail")
        assert (await c2.install("2022.1")).status == 202
        await wait_phase(c2, "Failed")
        assert (await c1.install("2022.1")).status == 202
        await wait_phase(c1, "DatabaseUpdatesRequired")
        # Now ms-1 holds it: ms-2 may not retry until the schema is at 2022.1.
        await assert_refused(fleet, await c2.install("2022.1"), "ms-2", "install", "database-first")


def provisioned_pair(cfg: dict[str, Any]) -> dict[str, Any]:
    """ps-1 and ps-2 of pers-db provisioned at 2022.1 over a 2021.1 schema, replication off, not balanced."""
    cfg["loadBalancers"] = [cfg["loadBalancers"][0]]
    provisioned = {"kind": "Personalization", "database": "pers-db", "port": 0, "version": "2022.1",
                   "replicationEnabled": False}
    cfg["servers"] = [*cfg["servers"][:2], {"name": "ps-1", "replicationRole": "Master", **provisioned},
                      {"name": "ps-2", "replicationRole": "Subscriber", **provisioned}]
    return cfg


async def test_no_replication_while_a_members_database_is_locked(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(provisioned_pair(estate(migrationStepSeconds=2.0))) as fleet, \
            fleet.client("ps-1") as m, fleet.client("ps-2") as s:
        assert (await m.update_all()).status == 202
        await wait_phase(m, "MigratingSchema")
        await assert_refused(fleet, await m.replication(True), "ps-1", "replication", "replication-schema-locked")
        await assert_refused(fleet, await s.replication(True), "ps-2", "replication", "replication-schema-locked")
        assert (await s.replication(False)).status == 200, "disabling stays allowed"
        await wait_portal(m, "Upgrade Successful", within=15)
        assert (await m.replication(True)).status == 200


async def test_no_install_on_a_database_whose_group_replicates(estate: Callable[..., dict[str, Any]]) -> None:
    cfg = estate()
    cfg["servers"].append({"name": "ps-4", "kind": "Personalization", "database": "pers-db", "port": 0})
    async with running_fleet(cfg) as fleet, fleet.client("ps-4") as c4:
        assert (await c4.state()).body["replication"]["role"] == "None"
        reply = await c4.install("2022.1")
        await assert_refused(fleet, reply, "ps-4", "install", "group-replication-enabled")
        assert "ps-1" in reply.error
        for name in ("ps-1", "ps-2", "ps-3"):
            async with fleet.client(name) as c:
                assert (await c.replication(False)).status == 200
        assert (await c4.install("2022.1")).status == 202


async def test_no_return_to_rotation_before_the_status_page_confirms(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(settleSeconds=1.0)) as fleet, fleet.client("ms-1") as c, \
            AgentClient(fleet.servers["ms-1"].url, None) as anonymous:
        assert (await c.state()).body["phase"] == "Starting"
        assert (await c.status_page("Management")).status == 503
        # Its client routes answer as its status page does.
        served = await anonymous.request("GET", MS_ROUTE, auth=False)
        assert served.status == 503 and "Starting" in served.body["error"]
        await assert_refused(fleet, await c.rotation(True), "ms-1", "rotation", "status-not-confirmed")
        assert (await c.rotation(False)).status == 200, "taking out stays allowed"
        await wait_for(lambda: c.status_page("Management"), lambda p: p.status == 200, within=10)
        assert (await anonymous.request("GET", MS_ROUTE, auth=False)).status == 200
        assert (await c.rotation(True)).status == 200
