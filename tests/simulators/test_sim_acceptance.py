"""Acceptance: the 2 Management + 3 Personalization estate, upgraded by hand in the guide's order.

Each wrong order is tried on the way and must be refused with the contract's rule id and a reason;
the right order succeeds, user data survives, and the journal shows no broken rule. The same script
runs against a fleet started programmatically and against `uwm-sim fleet simulators/examples/fleet.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from uwm_sim.client import AgentClient
from uwm_sim.fleet import running_fleet
from uwm_sim.journal import Event, violations

from sim_helpers import TOKEN, checksum, start_cli, stop_cli, wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration

MS, PS = ["ms-1", "ms-2"], ["ps-1", "ps-2", "ps-3"]
TARGET = "2023.1"
EXAMPLE = Path(__file__).resolve().parents[2] / "simulators" / "examples" / "fleet.yaml"


@dataclass
class Target:
    urls: dict[str, str]
    kinds: dict[str, str]
    lbs: dict[str, str]
    token: str


def refused(reply: Any, rule: str) -> None:
    assert reply.status == 409, reply.text
    assert reply.rule == rule, reply.body
    assert reply.error, "a refusal carries a reason"


async def upgrade_database_first(t: Target, c: dict[str, AgentClient], first: str, others: list[str],
                                 db: str) -> None:
    reply = await c[first].install(TARGET)
    assert reply.status == 202, reply.text
    state = await wait_phase(c[first], "DatabaseUpdatesRequired")
    assert state["version"] == TARGET and state["database"]["updatesRequired"]
    kind = t.kinds[first]
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


async def manual_upgrade(t: Target) -> list[Event]:
    """The runbook, with every wrong order tried first; returns the journal."""
    c = {name: AgentClient(url, t.token) for name, url in t.urls.items()}
    try:
        for name in MS + PS:
            assert (await c[name].status_page(t.kinds[name])).status == 200
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
        async with AgentClient(t.lbs["ms-pool"], None) as lb:
            assert (await lb.request("GET", "/ManagementServer/deployment/status.aspx", auth=False)).status == 503
        # 3. First server per database: install, then the schema through the portal.
        await upgrade_database_first(t, c, "ms-1", ["ms-2"], "mgmt-db")
        await upgrade_database_first(t, c, "ps-1", ["ps-2", "ps-3"], "pers-db")
        # Wrong order: replication back on before every server of the group is upgraded.
        refused(await c["ps-1"].replication(True), "version-mismatch")
        # 4. The rest.
        for name in ["ms-2", "ps-2", "ps-3"]:
            assert (await c[name].install(TARGET)).status == 202
        for name in ["ms-2", "ps-2", "ps-3"]:
            assert (await wait_phase(c[name], "Running"))["version"] == TARGET
        # 5. Back in rotation, 6. replication on; subscribers catch up.
        for name in MS + PS:
            assert (await c[name].rotation(True)).status == 200
        for name in PS:
            assert (await c[name].replication(True)).status == 200
        for name in ["ps-2", "ps-3"]:
            await wait_for(c[name].state, lambda r: r.body["replication"]["caughtUp"])
        for name in MS + PS:
            page = await c[name].status_page(t.kinds[name])
            assert page.status == 200 and "Connection successful" in page.text and TARGET in page.text
        async with AgentClient(t.lbs["ps-pool"], None) as lb:
            assert (await lb.request("GET", "/PersonalizationServer/status.aspx", auth=False)).status == 200
        return [Event.from_json(e) for e in await c["ms-1"].journal()]
    finally:
        for client in c.values():
            await client.close()


def check_journal(events: list[Event]) -> None:
    assert violations(events) == []
    ops = [(e.server, e.op, e.outcome) for e in events]
    first_install = ops.index(("ps-1", "install", "ok"))
    for name in PS:
        assert ops.index((name, "replication", "ok")) < first_install
    assert [e.outcome for e in events if e.op == "schema-migrated"] == ["ok", "ok"]
    assert sum(1 for e in events if e.outcome == "refused") >= 12


async def test_manual_upgrade_in_the_guides_order(estate: Callable[..., dict[str, Any]]) -> None:
    cfg = estate(migrationStepSeconds=0.4)
    mgmt_odbc, pers_odbc = cfg["databases"][0]["odbc"], cfg["databases"][1]["odbc"]
    async with running_fleet(cfg) as fleet:
        before = checksum(mgmt_odbc), checksum(pers_odbc)
        assert before[0][0] == 25 and before[1][0] == 40
        target = Target({n: e.url for n, e in fleet.servers.items()}, {n: e.kind for n, e in fleet.servers.items()},
                        fleet.load_balancers, fleet.token)
        check_journal(await manual_upgrade(target))
    assert (checksum(mgmt_odbc), checksum(pers_odbc)) == before


async def test_example_fleet_file_through_the_cli(make_db: Callable[[], str]) -> None:
    env = {"UWM_SIM_STATE_ODBC": make_db(), "UWM_SIM_MGMT_ODBC": make_db(), "UWM_SIM_PERS_ODBC": make_db(),
           "UWM_SIM_TOKEN": TOKEN, "UWM_SIM_SETTLE_SECONDS": "0.1", "UWM_SIM_INSTALL_SECONDS": "0.1",
           "UWM_SIM_MIGRATION_STEP_SECONDS": "0.3"}
    proc, info = await start_cli(["fleet", str(EXAMPLE), "--ephemeral-ports"], env)
    try:
        servers = info["servers"]
        assert {n: s["kind"] for n, s in servers.items()} == {"ms-1": "Management", "ms-2": "Management",
                                                               "ps-1": "Personalization", "ps-2": "Personalization",
                                                               "ps-3": "Personalization"}
        assert servers["ms-1"]["statusUrl"].endswith(":" + servers["ms-1"]["url"].rsplit(":", 1)[1]
                                                     + "/ManagementServer/deployment/status.aspx")
        assert servers["ps-1"]["statusUrl"].endswith("/PersonalizationServer/status.aspx")
        target = Target({n: s["url"] for n, s in servers.items()}, {n: s["kind"] for n, s in servers.items()},
                        info["loadBalancers"], TOKEN)
        for name in target.urls:  # settle delay of 0.1 s after the start
            async with AgentClient(target.urls[name], TOKEN) as c:
                await wait_for(lambda c=c, k=target.kinds[name]: c.status_page(k), lambda p: p.status == 200)
        check_journal(await manual_upgrade(target))
        assert checksum(env["UWM_SIM_MGMT_ODBC"])[0] == 100
    finally:
        code, err = await stop_cli(proc)
    assert code == 0, err

