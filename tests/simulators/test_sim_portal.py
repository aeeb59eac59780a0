"""The Server Configuration Portal: Database Updates Required, UPDATE SELECTED / UPDATE ALL, Upgrade Successful."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim.fleet import running_fleet

from sim_helpers import query, wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration
PORTAL = "/ServerConfigurationPortal"


async def test_html_portal_flow(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small(migrationStepSeconds=0.3)
    odbc = cfg["databases"][0]["odbc"]
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        home = await c.request("GET", f"{PORTAL}/", auth=False)
        assert home.status == 200 and "User Workspace Manager Summary" in home.text
        assert (await c.portal()).body["status"] == "Idle"
        await c.install("2023.1")
        await wait_phase(c, "DatabaseUpdatesRequired")
        page = await c.request("GET", f"{PORTAL}/", auth=False)
        assert "Database Updates Required" in page.text
        assert "UPDATE SELECTED" in page.text and "UPDATE ALL" in page.text
        assert 'name="databases" value="mgmt-db"' in page.text
        # Selections must be databases of this server.
        bad = await c.request("POST", f"{PORTAL}/DatabaseUpdates/UpdateSelected", auth=False,
                              form={"databases": "pers-db"})
        assert bad.status == 400 and "databases" in bad.text
        none = await c.request("POST", f"{PORTAL}/DatabaseUpdates/UpdateSelected", auth=False, form={})
        assert none.status == 400
        started = await c.request("POST", f"{PORTAL}/DatabaseUpdates/UpdateSelected", auth=False,
                                  form={"databases": "mgmt-db"})
        assert started.status == 202 and "Status: Upgrading" in started.text
        assert (await c.portal()).body["status"] == "Upgrading"
        assert query(odbc, "SELECT holder FROM uwm_schema_lock WHERE id = 1") == [("ms-2",)]
        done = await wait_portal(c, "Upgrade Successful")
        assert done["updatesRequired"] == [] and done["from"] == "2021.1" and done["to"] == "2023.1"
        page = await c.request("GET", f"{PORTAL}/", auth=False)
        assert "Upgrade Successful" in page.text and "CLOSE" in page.text
        closed = await c.request("POST", f"{PORTAL}/DatabaseUpdates/Close", auth=False)
        assert closed.status == 200 and "User Workspace Manager Summary" in closed.text  # after the redirect
        assert (await c.portal()).body["status"] == "Idle"
    assert query(odbc, "SELECT schema_version FROM uwm_schema_info WHERE id = 1") == [("2023.1",)]
    assert query(odbc, "SELECT holder FROM uwm_schema_lock") == [(None,)]
    assert query(odbc, "SELECT version, applied_by FROM uwm_migrations ORDER BY version") == [
        ("2021.1", "initial-install"), ("2022.1", "ms-2"), ("2023.1", "ms-2")]


async def test_update_all_json_and_lockout(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(migrationStepSeconds=0.3)) as fleet, \
            fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        assert (await c1.rotation(False)).status == 200
        assert (await c1.install("2022.1")).status == 202
        await wait_phase(c1, "DatabaseUpdatesRequired")
        assert (await c2.update_all()).rule == "no-updates-required"
        reply = await c1.update_all()
        assert reply.status == 202 and reply.body["status"] == "Upgrading"
        assert (await c1.update_all()).rule == "busy"
        assert (await c2.state()).body["phase"] == "LockedOut"
        assert (await c1.state()).body["phase"] == "MigratingSchema"
        assert (await c2.status_page("Management")).status == 503
        assert (await c2.request("GET", "/ManagementServer/api/x", auth=False)).status == 503
        assert (await c1.install("2023.1")).rule == "busy"
        await wait_portal(c2, "Upgrade Successful")
        await wait_phase(c1, "Running")
        state2 = await wait_for(c2.state, lambda r: r.body["phase"] == "VersionMismatch")
        assert state2.body["database"]["schemaVersion"] == "2022.1"
        page = await c2.status_page("Management")
        assert page.status == 503 and "Version mismatch" in page.text
        # The portal still answers on a server that refuses service.
        assert (await c2.portal()).status == 200
