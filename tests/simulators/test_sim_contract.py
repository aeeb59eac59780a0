"""The answers match docs/contracts.md section 2 (and the operator's own parsers of them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim.fleet import running_fleet

from sim_helpers import wait_phase

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration

STATE_KEYS = {"name", "kind", "version", "phase", "settled", "install", "database", "replication", "rotation",
              "faults"}
NESTED = {"install": {"targetVersion", "startedAt", "finishedAt", "error"},
          "database": {"name", "schemaVersion", "lockHolder", "updatesRequired"},
          "replication": {"role", "enabled", "caughtUp"},
          "rotation": {"loadBalanced", "inRotation", "activeRequests"}}
PHASES = {"Running", "Installing", "DatabaseUpdatesRequired", "MigratingSchema", "LockedOut", "VersionMismatch",
          "Failed", "Starting"}


def check_state(state: dict[str, Any]) -> None:
    assert set(state) >= STATE_KEYS
    for key, keys in NESTED.items():
        assert keys <= set(state[key]), key
    assert state["phase"] in PHASES


async def test_state_and_portal_shapes(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(estate()) as fleet, fleet.client("ps-2") as c:
        fresh = (await c.state()).body
        check_state(fresh)
        assert fresh["install"] == {"targetVersion": None, "startedAt": None, "finishedAt": None, "error": None}
        await c.replication(False)
        reply = await c.replication(False)
        assert reply.status == 200 and set(reply.body) == {"state"}
        check_state(reply.body["state"])
        for other in ("ps-1", "ps-3"):
            async with fleet.client(other) as o:
                assert (await o.replication(False)).status == 200
        await c.rotation(False)
        accepted = await c.install("2022.1")
        assert accepted.status == 202 and accepted.body["accepted"] is True
        check_state(accepted.body["state"])
        state = await wait_phase(c, "DatabaseUpdatesRequired")
        check_state(state)
        assert state["install"]["finishedAt"] and state["install"]["targetVersion"] == "2022.1"
        portal = (await c.portal()).body
        assert portal["updatesRequired"] == [{"database": "pers-db", "from": "2021.1", "to": "2022.1"}]
        assert portal["status"] in {"Idle", "Upgrading", "Upgrade Successful", "Failed"}
        try:
            from uwm_upgrade.adapters.servers import AgentState, PortalStatus
        except ImportError:  # the operator's adapters are optional for these tests
            return
        for body in (fresh, state):
            parsed = AgentState.model_validate(body)
            assert parsed.database.name == "pers-db"
        assert PortalStatus.model_validate(portal).updates_required[0].to_version == "2022.1"
