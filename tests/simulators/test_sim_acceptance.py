"""Acceptance: the 2 Management + 3 Personalization estate, upgraded by hand in the guide's order.

Each wrong order is tried on the way and must be refused with the contract's rule id and a reason;
the right order succeeds, user data survives, and the journal shows no broken rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sim_helpers import checksum, wait_for, wait_phase, wait_portal

from uwm_sim.client import AgentClient
from uwm_sim.fleet import RunningFleet, running_fleet
from uwm_sim.journal import violations

pytestmark = pytest.mark.integration

MS, PS = ["ms-1", "ms-2"], ["ps-1", "ps-2", "ps-3"]
TARGET = "2023.1"


def refused(reply: Any, rule: str) -> None:
    assert reply.status == 409, reply.text
    assert reply.rule == rule, reply.body
    assert reply.error, "a refusal carries a reason"


async def upgrade_database_first(fleet: RunningFleet, c: dict[str, AgentClient], first: str, others: list[str],
                                 db: str) -> None:
    reply = await c[first].install(TARGET)
    assert reply.status == 202, reply.text
    state = await wait_phase(c[first], "DatabaseUpdatesRequired")
    assert state["version"] == TARGET and state["database"]["updatesRequired"]
    kind = fleet.servers[first].kind
    page = await c[first].status_page(kind)
    assert page.status == 503 and "Version mismatch" in page.text
    portal = (await c[first].portal()).body
    assert portal["updatesRequired"] == [{"database": db, "from": "2021.1", "to": TARGET}]
    # Not the first server: nothing for it to migrate.
    refused(await c[others[0]].update_all(), "no-updates-required")
    reply = await c[first].update_selected([db])
    assert reply.status == 202, reply.text
    # While the schema upgrade runs, every other server of the database is locked out.
    other = await c[others[0]].state()
    assert other.body["phase"] == "LockedOut", other.body
    page = await c[others[0]].status_page(kind)
    assert page.status == 503 and "Locked out" in page.text
    refused(await c[others[0]].install(TARGET), "schema-locked")
    refused(await c[others[0]].update_all(), "schema-locked")
    await wait_portal(c[first], "Upgrade Successful")
    assert (await c[first].portal()).body["updatesRequired"] == []
    await wait_phase(c[first], "Running")
    # The rest now run an older release than the schema: they refuse service until upgraded.
    for name in others:
        assert (await c[name].state()).body["phase"] == "VersionMismatch"
        refused(await c[name].rotation(True), "version-mismatch")


async def test_manual_upgrade_in_the_guides_order(estate: Callable[..., dict[str, Any]]) -> None:
    cfg = estate(migrationStepSeconds=0.4)
    mgmt_odbc, pers_odbc = cfg["databases"][0]["odbc"], cfg["databases"][1]["odbc"]
    async with running_fleet(cfg) as fleet:
        before = checksum(mgmt_odbc), checksum(pers_odbc)
        assert before[0][0] == 25 and before[1][0] == 40
        c = {name: fleet.client(name) for name in MS + PS}
        try:
            for name, ep in fleet.servers.items():
                assert (await c[name].status_page(ep.kind)).status == 200
            # Wrong order: an install while replication is on; a jump of 3 majors; an unknown release.
            refused(await c["ps-2"].install(TARGET), "replication-enabled")
            refused(await c["ms-1"].install("2024.1"), "version-jump")
            refused(await c["ms-1"].install("1999.9"), "unknown-release")
            # 1. Replication off on the master and every subscriber.
            for name in PS:
                assert (await c[name].replication(False)).status == 200
            # Wrong order: a load-balanced server still in rotation.
            refused(await c["ps-1"].install(TARGET), "in-rotation")
            refused(await c["ms-1"].install(TARGET), "in-rotation")
            # 2. Out of rotation; the load balancer has nobody left to send traffic to.
            for name in MS + PS:
                assert (await c[name].rotation(False)).status == 200
            async with AgentClient(fleet.load_balancers["ms-pool"], None) as lb:
                assert (await lb.request("GET", "/ManagementServer/deployment/status.aspx", auth=False)).status == 503
            # 3. First server per database: install, then the schema through the portal.
            await upgrade_database_first(fleet, c, "ms-1", ["ms-2"], "mgmt-db")
            await upgrade_database_first(fleet, c, "ps-1", ["ps-2", "ps-3"], "pers-db")
            # Wrong order: replication back on before every server of the group is upgraded.
            refused(await c["ps-1"].replication(True), "version-mismatch")
            # 4. The rest.
            for name in ["ms-2", "ps-2", "ps-3"]:
                assert (await c[name].install(TARGET)).status == 202
            for name in ["ms-2", "ps-2", "ps-3"]:
                state = await wait_phase(c[name], "Running")
                assert state["version"] == TARGET
            # 5. Back in rotation, 6. replication on; subscribers catch up.
            for name in MS + PS:
                assert (await c[name].rotation(True)).status == 200
            for name in PS:
                assert (await c[name].replication(True)).status == 200
            for name in ["ps-2", "ps-3"]:
                await wait_for(c[name].state, lambda r: r.body["replication"]["caughtUp"])
            for name, ep in fleet.servers.items():
                page = await c[name].status_page(ep.kind)
                assert page.status == 200 and "Connection successful" in page.text and TARGET in page.text
            async with AgentClient(fleet.load_balancers["ps-pool"], None) as lb:
                reply = await lb.request("GET", "/PersonalizationServer/status.aspx", auth=False)
                assert reply.status == 200
            events = await fleet.journal()
        finally:
            for client in c.values():
                await client.close()
    assert violations(events) == []
    ops = [(e.server, e.op, e.outcome) for e in events]
    first_install = ops.index(("ps-1", "install", "ok"))
    for name in PS:
        assert ops.index((name, "replication", "ok")) < first_install
    assert [e.outcome for e in events if e.op == "schema-migrated"] == ["ok", "ok"]
    assert sum(1 for e in events if e.outcome == "refused") >= 12
    assert (checksum(mgmt_odbc), checksum(pers_odbc)) == before
